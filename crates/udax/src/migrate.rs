//! Copy a whole file system onto another one: how an image of the older
//! on-device format (format 2, the whole metadata image loaded at mount)
//! moves to format 3 (metadata used in place), as `udax migrate` does.
//!
//! The copy is made through the file system API of both sides, so it
//! holds whatever the target format needs, and the source is only read
//! (mount it read-only). What it keeps: the tree, each file's bytes and
//! holes (allocated ranges stay allocated, holes stay holes, blocks
//! reserved past the end with `KEEP_SIZE` stay reserved), hard links,
//! blocks shared between files by reflink (where a whole block inside
//! both files is shared; a shared partial last block is copied), symbolic
//! links, special files, mode bits, owners, and access and modification
//! times. What it cannot keep: inode numbers, change and birth times (the
//! copy's own), and files unlinked but still open at the source's last
//! mount (they are not reachable by name: gone, as at the next mount).
//!
//! What cannot be read from the source, a media error (`EIO`) or damaged
//! metadata (`EUCLEAN`, as a salvage mount shows it), is left out of the
//! copy and named in the report: a file that cannot be read whole (with
//! every other name it has), an entry whose inode cannot be read, the
//! entries of a directory that cannot be listed (the directory itself is
//! made). The rest is copied. Any other error stops the copy: the target
//! then holds part of the tree and should be made anew.

use std::collections::{BTreeMap, HashMap};

use crate::format::S_IFMT;
use crate::fs::{child_path, falloc, Error, File, Fs, OpenOptions, Result, Stat};
use crate::BLOCK_SIZE;

/// How much the source holds, for a progress bar.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Inodes in use (the root directory included).
    pub inodes: u64,
    /// Bytes of file data in use (shared blocks counted once).
    pub bytes: u64,
}

/// How far a copy has come (given to its progress callback).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Names made (directories, files, links, special files).
    pub names: u64,
    /// Bytes of file data copied or shared so far.
    pub bytes: u64,
}

/// What a copy did.
#[derive(Debug, Default)]
pub struct Report {
    pub dirs: u64,
    pub files: u64,
    /// Names made as hard links of a file copied under another name.
    pub hard_links: u64,
    pub symlinks: u64,
    /// FIFOs, sockets, character and block special files.
    pub specials: u64,
    /// Bytes of file data written.
    pub bytes_copied: u64,
    /// Bytes of file data shared with a file copied before (reflink).
    pub bytes_shared: u64,
    /// Paths left out because the source could not be read there, and why.
    pub left_out: Vec<(String, String)>,
}

/// Bytes read and written at a time.
const CHUNK: u64 = 1 << 20;

/// What the source `src` holds (from its `statfs`).
pub fn totals(src: &Fs) -> Totals {
    let s = src.statfs();
    let used = s.data_blocks.saturating_sub(s.free_blocks) * s.block_size;
    // Format 3 counts its metadata blocks in the data area; format 2 in
    // its checkpoint slots (`metadata_capacity` non-zero).
    let meta = if s.metadata_capacity == 0 {
        s.metadata_bytes
    } else {
        0
    };
    Totals {
        inodes: s.inodes,
        bytes: used.saturating_sub(meta),
    }
}

/// Copy every name under `/` of `src` onto `dst`, which should be empty
/// (a name that exists there already fails the copy with `Exists`), and
/// give `/` the source's mode bits, owner and times. `progress` is called
/// as names are made and bytes copied.
pub fn copy_all(src: &Fs, dst: &Fs, progress: &mut dyn FnMut(Progress)) -> Result<Report> {
    let room = dst.statfs().free_blocks * BLOCK_SIZE;
    let need = totals(src).bytes;
    if need > room {
        return Err(Error::Io(std::io::Error::new(
            std::io::ErrorKind::StorageFull,
            format!(
                "the target has {} MiB free for the source's {} MiB of file data",
                room >> 20,
                need.div_ceil(1 << 20)
            ),
        )));
    }
    let mut c = Copy {
        src,
        dst,
        report: Report::default(),
        done: Progress::default(),
        progress,
        links: HashMap::new(),
        shared: BTreeMap::new(),
        clone_src: None,
        dirs: Vec::new(),
    };
    c.tree()?;
    Ok(c.report)
}

/// A copy in progress.
struct Copy<'a> {
    src: &'a Fs,
    dst: &'a Fs,
    report: Report,
    done: Progress,
    progress: &'a mut dyn FnMut(Progress),
    /// Source inodes with more than one name: the path copied first
    /// (`None`: left out).
    links: HashMap<u64, Option<String>>,
    /// Source device blocks shared by reflink, already copied: first
    /// block -> (blocks, the target path holding them, its file block).
    shared: BTreeMap<u64, (u64, String, u64)>,
    /// The target file last cloned from (path, file).
    clone_src: Option<(String, File)>,
    /// Directories made, with their source attributes: their times are set
    /// last (making names in them changes their modification time).
    dirs: Vec<(String, Stat)>,
}

impl Copy<'_> {
    fn tree(&mut self) -> Result<()> {
        let root = self.src.lstat("/")?;
        let mut todo = vec!["/".to_string()];
        while let Some(dir) = todo.pop() {
            let entries = match self.src.read_dir(&dir) {
                Err(e) if unreadable(&e) => {
                    self.left_out(format!("{dir} (its entries)"), e);
                    continue;
                }
                r => r?,
            };
            for e in entries {
                let path = child_path(&dir, &e.name);
                let st = match self.src.lstat(&path) {
                    Err(e) if unreadable(&e) => {
                        self.left_out(path, e);
                        continue;
                    }
                    r => r?,
                };
                if self.entry(&path, &st)? {
                    todo.push(path);
                }
                (self.progress)(self.done);
            }
        }
        self.attrs("/", &root)?;
        for (path, st) in std::mem::take(&mut self.dirs) {
            self.dst
                .set_times_nofollow(&path, Some(st.atime_ns), Some(st.mtime_ns))?;
        }
        self.dst
            .set_times_nofollow("/", Some(root.atime_ns), Some(root.mtime_ns))?;
        Ok(())
    }

    /// Make `path` in the target as the source's `st` shows it; `true` for
    /// a directory (its entries are copied next).
    fn entry(&mut self, path: &str, st: &Stat) -> Result<bool> {
        let kind = st.mode & S_IFMT;
        if st.is_dir() {
            self.dst.mkdir(path, st.mode & 0o7777)?;
            self.attrs(path, st)?;
            self.dirs.push((path.to_string(), *st));
            self.report.dirs += 1;
            self.done.names += 1;
            return Ok(true);
        }
        if st.nlink > 1 {
            if let Some(first) = self.links.get(&st.ino) {
                match first {
                    Some(first) => {
                        self.dst.link(first, path)?;
                        self.report.hard_links += 1;
                        self.done.names += 1;
                    }
                    None => self.left_out(
                        path.to_string(),
                        "a hard link of a file left out under another name",
                    ),
                }
                return Ok(false);
            }
        }
        let made = if st.is_file() {
            self.file(path, st)?
        } else if st.is_symlink() {
            let target = self.src.readlink(path)?;
            self.dst.symlink(&target, path)?;
            self.report.symlinks += 1;
            true
        } else {
            self.dst.mknod(path, kind | (st.mode & 0o7777), st.rdev)?;
            self.report.specials += 1;
            true
        };
        if st.nlink > 1 {
            self.links.insert(st.ino, made.then(|| path.to_string()));
        }
        if made {
            self.attrs(path, st)?;
            self.dst
                .set_times_nofollow(path, Some(st.atime_ns), Some(st.mtime_ns))?;
            self.done.names += 1;
        }
        Ok(false)
    }

    fn left_out(&mut self, path: String, why: impl std::fmt::Display) {
        self.report.left_out.push((path, why.to_string()));
    }

    /// Owner, then mode bits (a change of owner may clear set-ID bits).
    fn attrs(&self, path: &str, st: &Stat) -> Result<()> {
        self.dst
            .set_owner_nofollow(path, Some(st.uid), Some(st.gid))?;
        if !st.is_symlink() {
            self.dst.set_permissions_nofollow(path, st.mode & 0o7777)?;
        }
        Ok(())
    }

    /// Copy regular file `path`: `false` if it could not be read whole
    /// (then it is not in the target, and is in the report).
    fn file(&mut self, path: &str, st: &Stat) -> Result<bool> {
        let from = match self.src.open(path, &OpenOptions::default()) {
            Err(e) if unreadable(&e) => {
                self.left_out(path.to_string(), e);
                return Ok(false);
            }
            r => r?,
        };
        let to = self.dst.create(path, st.mode & 0o7777)?;
        to.set_len(st.size)?;
        match self.contents(path, &from, &to, st.size) {
            Ok(()) => {
                self.report.files += 1;
                Ok(true)
            }
            Err(Failed::Source(e)) if unreadable(&e) => {
                drop(to);
                self.dst.unlink(path)?;
                self.left_out(path.to_string(), e);
                Ok(false)
            }
            Err(Failed::Source(e) | Failed::Target(e)) => Err(e),
        }
    }

    /// The bytes of `from` (of `size` bytes) into `to`, extent by extent:
    /// holes are left holes, shared blocks seen before are shared again.
    fn contents(
        &mut self,
        path: &str,
        from: &File,
        to: &File,
        size: u64,
    ) -> std::result::Result<(), Failed> {
        let whole_blocks = size / BLOCK_SIZE;
        for (e, shared) in from.extents_shared() {
            let (start, end) = (e.file_blk, e.file_blk + e.len);
            // Blocks reserved past the end of file.
            if end > size.div_ceil(BLOCK_SIZE) {
                let first = start.max(size.div_ceil(BLOCK_SIZE));
                to.fallocate(
                    falloc::KEEP_SIZE,
                    first * BLOCK_SIZE,
                    (end - first) * BLOCK_SIZE,
                )
                .map_err(Failed::Target)?;
            }
            let mut at = start;
            // Whole blocks inside the file: shared again if seen before.
            if shared {
                let inside = end.min(whole_blocks);
                while at < inside {
                    let dev = e.dev_blk + (at - start);
                    let n = match self.seen(dev, inside - at) {
                        Some((n, holder, holder_blk)) => {
                            self.share(&holder, holder_blk, to, at, n)
                                .map_err(Failed::Target)?;
                            n
                        }
                        None => {
                            let n = self.unseen_run(dev, inside - at);
                            self.copy(from, to, at * BLOCK_SIZE, n * BLOCK_SIZE)?;
                            self.shared.insert(dev, (n, path.to_string(), at));
                            n
                        }
                    };
                    at += n;
                }
            }
            let data_end = (end * BLOCK_SIZE).min(size);
            if at * BLOCK_SIZE < data_end {
                self.copy(from, to, at * BLOCK_SIZE, data_end - at * BLOCK_SIZE)?;
            }
        }
        Ok(())
    }

    /// Device blocks from `dev` (at most `max`) already copied as shared:
    /// how many, the target path holding them and its file block there.
    fn seen(&self, dev: u64, max: u64) -> Option<(u64, String, u64)> {
        let (&first, (n, holder, blk)) = self.shared.range(..=dev).next_back()?;
        let skip = dev - first;
        (skip < *n).then(|| ((n - skip).min(max), holder.clone(), blk + skip))
    }

    /// Blocks from `dev` (at most `max`) before the next run already copied.
    fn unseen_run(&self, dev: u64, max: u64) -> u64 {
        match self.shared.range(dev + 1..).next() {
            Some((&next, _)) => (next - dev).min(max),
            None => max,
        }
    }

    /// Make `to`'s blocks `at..at+n` share those of target file `holder`
    /// from its block `holder_blk`.
    fn share(&mut self, holder: &str, holder_blk: u64, to: &File, at: u64, n: u64) -> Result<()> {
        if self.clone_src.as_ref().is_none_or(|(p, _)| p != holder) {
            let f = self.dst.open(holder, &OpenOptions::default())?;
            self.clone_src = Some((holder.to_string(), f));
        }
        let (_, src) = self.clone_src.as_ref().expect("set above");
        let len = n * BLOCK_SIZE;
        self.dst
            .clone_range(src, holder_blk * BLOCK_SIZE, to, at * BLOCK_SIZE, len)?;
        self.report.bytes_shared += len;
        self.done.bytes += len;
        (self.progress)(self.done);
        Ok(())
    }

    /// Copy bytes `off..off+len` of `from` into `to`.
    fn copy(
        &mut self,
        from: &File,
        to: &File,
        off: u64,
        len: u64,
    ) -> std::result::Result<(), Failed> {
        let mut buf = vec![0u8; CHUNK.min(len) as usize];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(CHUNK) as usize;
            let got = from
                .read_at(&mut buf[..n], off + done)
                .map_err(Failed::Source)?;
            if got != n {
                return Err(Failed::Source(Error::Io(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("short read at {} of a file", off + done),
                ))));
            }
            write_all(to, &buf[..n], off + done).map_err(Failed::Target)?;
            done += n as u64;
            self.report.bytes_copied += n as u64;
            self.done.bytes += n as u64;
            (self.progress)(self.done);
        }
        Ok(())
    }
}

/// Where copying a file's bytes failed.
enum Failed {
    /// Reading the source.
    Source(Error),
    /// Writing the target.
    Target(Error),
}

/// An error of reading the source that leaves the thing out: a media
/// error or damaged metadata. (Errors of the target stop the copy.)
fn unreadable(e: &Error) -> bool {
    matches!(e.errno(), libc::EIO | libc::EUCLEAN)
}

fn write_all(f: &File, mut buf: &[u8], mut off: u64) -> Result<()> {
    while !buf.is_empty() {
        let n = f.write_at(buf, off)?;
        if n == 0 {
            return Err(Error::NoSpace);
        }
        buf = &buf[n..];
        off += n as u64;
    }
    Ok(())
}
