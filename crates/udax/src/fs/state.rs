//! In-memory inode state and the one function that changes it: [`apply`].
//!
//! The running fs and log replay both change metadata only by applying
//! [`Op`]s here, so a replayed log produces exactly the state the running fs had.

use super::extent::ExtentMap;
use crate::format::{
    inode_record_bytes, Attr, DirentImage, Extent, InodeImage, Op, BADBLOCK_RANGE_BYTES,
    DIRENT_RECORD_BYTES, DT_DIR, EXTENT_RECORD_BYTES, REFCOUNT_RANGE_BYTES, SYMLINK_MAX, S_IFBLK,
    S_IFCHR, S_IFDIR, S_IFLNK, S_IFMT,
};
use std::collections::{BTreeMap, HashMap};

/// Everything known about one inode.
#[derive(Clone, Debug, Default)]
pub struct InodeData {
    pub attr: Attr,
    pub map: ExtentMap,
    /// Entries of a directory: name -> (ino, d_type). Empty for a
    /// directory whose entries stay on the device (`on_device`).
    pub dir: BTreeMap<Vec<u8>, (u64, u8)>,
    /// Format 3: a directory whose entries live only in its tree on the
    /// device (`tree_root`), never loaded: lookups, checks and listings
    /// read the tree; [`apply`] keeps only their count (`entries`).
    pub on_device: bool,
    /// The entry count of an `on_device` directory (its slot's tree count).
    pub entries: u64,
    /// Total bytes of the entries' names.
    name_bytes: u64,
    /// Set when the inode is deleted (a handle may still point at the cell).
    pub freed: bool,
    /// Format 3: the root block of the inode's tree (a directory's entries,
    /// or a file's extents past the inline ones); 0 = none.
    pub tree_root: u64,
    /// A symbolic link's target (empty for every other inode). One longer
    /// than fits the slot inline is also in the data block `map` maps.
    pub target: Vec<u8>,
    /// A character or block special file's device number (0 otherwise).
    pub rdev: u64,
}

impl InodeData {
    pub fn is_dir(&self) -> bool {
        self.attr.mode & S_IFMT == S_IFDIR
    }

    pub fn is_symlink(&self) -> bool {
        self.attr.mode & S_IFMT == S_IFLNK
    }

    /// Entries of a directory (0 for anything else).
    pub fn entry_count(&self) -> u64 {
        if self.on_device {
            self.entries
        } else {
            self.dir.len() as u64
        }
    }

    /// This inode's bytes in a checkpoint, exactly (the metadata accounting
    /// subtracts it when the inode goes, so it must never exceed what was added).
    pub fn image_bytes(&self) -> u64 {
        inode_record_bytes(
            self.map.len() as u64,
            self.dir.len() as u64,
            self.name_bytes,
        )
    }

    pub fn from_image(img: &InodeImage) -> Result<Self, String> {
        let mut d = InodeData {
            attr: img.attr,
            ..Default::default()
        };
        for e in &img.extents {
            d.map
                .insert(e.file_blk, e.dev_blk, e.len)
                .map_err(|m| format!("inode {}: extent {e:?}: {m}", img.ino))?;
        }
        for de in &img.dirents {
            d.add_entry(de.name.clone(), de.ino, de.file_type)
                .map_err(|m| format!("inode {}: {m}", img.ino))?;
        }
        Ok(d)
    }

    pub fn to_image(&self, ino: u64) -> InodeImage {
        InodeImage {
            ino,
            attr: self.attr,
            extents: self.map.iter().collect::<Vec<Extent>>(),
            dirents: self
                .dir
                .iter()
                .map(|(n, &(i, t))| DirentImage {
                    ino: i,
                    file_type: t,
                    name: n.clone(),
                })
                .collect(),
        }
    }

    /// The device runs `(block, count)` behind file blocks `[a, b)`.
    pub fn device_runs(&self, a: u64, b: u64) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.map
            .iter()
            .filter(move |e| e.file_blk < b && e.file_blk + e.len > a)
            .map(move |e| {
                let s = e.file_blk.max(a);
                let t = (e.file_blk + e.len).min(b);
                (e.dev_blk + (s - e.file_blk), t - s)
            })
    }

    pub(crate) fn add_entry(&mut self, name: Vec<u8>, ino: u64, t: u8) -> Result<(), String> {
        let bytes = name.len() as u64;
        if self.dir.insert(name, (ino, t)).is_some() {
            return Err("duplicate directory entry".into());
        }
        self.name_bytes += bytes;
        Ok(())
    }

    /// A directory's entries set at once (loading it from format 3): sorted
    /// by name first, so the map is built in one pass rather than by one
    /// insert per entry.
    pub(crate) fn set_entries(
        &mut self,
        mut entries: Vec<(Vec<u8>, (u64, u8))>,
    ) -> Result<(), String> {
        entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        if entries.windows(2).any(|w| w[0].0 == w[1].0) {
            return Err("duplicate directory entry".into());
        }
        self.name_bytes = entries.iter().map(|(n, _)| n.len() as u64).sum();
        self.dir = entries.into_iter().collect();
        Ok(())
    }

    fn remove_entry(&mut self, name: &[u8]) -> Option<(u64, u8)> {
        let e = self.dir.remove(name)?;
        self.name_bytes -= name.len() as u64;
        Some(e)
    }
}

/// Access to the inodes an op touches: the replay map, or the running fs's locked set.
pub trait Inodes {
    fn get(&mut self, ino: u64) -> Option<&mut InodeData>;
    fn create(&mut self, ino: u64, data: InodeData) -> Result<(), String>;
    fn delete(&mut self, ino: u64) -> Option<InodeData>;
}

impl Inodes for HashMap<u64, InodeData> {
    fn get(&mut self, ino: u64) -> Option<&mut InodeData> {
        self.get_mut(&ino)
    }
    fn create(&mut self, ino: u64, data: InodeData) -> Result<(), String> {
        if self.contains_key(&ino) {
            return Err(format!("inode {ino} already exists"));
        }
        self.insert(ino, data);
        Ok(())
    }
    fn delete(&mut self, ino: u64) -> Option<InodeData> {
        self.remove(&ino)
    }
}

/// What applying an op changed beyond the inodes themselves.
#[derive(Debug, Default)]
pub struct Effects {
    /// Device ranges `(start, len)` an extent stopped referencing: free once
    /// durable, unless other extents still share them ([`super::refs::RefTable`]).
    pub freed: Vec<(u64, u64)>,
    /// Device ranges that gained a reference from a shared mapping (reflink).
    pub shared: Vec<(u64, u64)>,
    /// Change of the checkpoint image size (bytes, estimated from above).
    pub image_delta: i64,
    pub created: Vec<u64>,
    pub deleted: Vec<u64>,
    /// Bad-block table changes, in order: `(start, len, poisoned)`.
    pub bad: Vec<(u64, u64, bool)>,
}

fn get<I: Inodes + ?Sized>(s: &mut I, ino: u64) -> Result<&mut InodeData, String> {
    s.get(ino)
        .ok_or_else(|| format!("op on missing inode {ino}"))
}

/// Apply one op. An error means the op does not fit the state (corrupt log, or a bug).
pub fn apply<I: Inodes + ?Sized>(s: &mut I, op: &Op, fx: &mut Effects) -> Result<(), String> {
    apply_known(s, op, fx, None)
}

/// [`apply`], where an [`Op::Unlink`]'s entry `(ino, d_type)` is `known`
/// (read from the directory's tree as it was removed there): required for a
/// directory whose entries are not in memory (`InodeData::on_device`),
/// checked against the map for one whose are.
pub fn apply_known<I: Inodes + ?Sized>(
    s: &mut I,
    op: &Op,
    fx: &mut Effects,
    known: Option<(u64, u8)>,
) -> Result<(), String> {
    match op {
        Op::NewInode {
            ino,
            mode,
            uid,
            gid,
            time_ns,
            parent,
        } => {
            if *ino == 0 {
                return Err("inode number 0".into());
            }
            let is_dir = mode & S_IFMT == S_IFDIR;
            let d = InodeData {
                attr: Attr {
                    mode: *mode,
                    nlink: u32::from(is_dir),
                    uid: *uid,
                    gid: *gid,
                    atime_ns: *time_ns,
                    mtime_ns: *time_ns,
                    ctime_ns: *time_ns,
                    btime_ns: *time_ns,
                    parent: *parent,
                    ..Default::default()
                },
                ..Default::default()
            };
            fx.image_delta += d.image_bytes() as i64;
            s.create(*ino, d)?;
            fx.created.push(*ino);
        }
        Op::Link {
            dir,
            ino,
            file_type,
            name,
            time_ns,
        } => {
            let target_is_dir = {
                let t = get(s, *ino)?;
                if t.freed {
                    return Err(format!("link to deleted inode {ino}"));
                }
                t.attr.nlink = t.attr.nlink.checked_add(1).ok_or("link count overflow")?;
                t.attr.ctime_ns = *time_ns;
                t.is_dir()
            };
            if target_is_dir != (*file_type == DT_DIR) {
                return Err(format!("link of inode {ino}: wrong entry type"));
            }
            let d = get(s, *dir)?;
            if !d.is_dir() {
                return Err(format!("link into non-directory {dir}"));
            }
            if d.on_device {
                // The tree itself refuses a duplicate (the store's insert).
                d.entries += 1;
            } else {
                d.add_entry(name.clone(), *ino, *file_type)?;
            }
            if target_is_dir {
                d.attr.nlink += 1;
            }
            d.attr.mtime_ns = *time_ns;
            d.attr.ctime_ns = *time_ns;
            fx.image_delta += (DIRENT_RECORD_BYTES + name.len() as u64) as i64;
        }
        Op::Unlink { dir, name, time_ns } => {
            let d = get(s, *dir)?;
            let (ino, t) = if d.on_device {
                // The caller removed the entry from the tree and says what it was.
                let e = known.ok_or_else(|| {
                    format!("unlink in directory {dir}: its entry was not read from its tree")
                })?;
                d.entries = d
                    .entries
                    .checked_sub(1)
                    .ok_or_else(|| format!("unlink in empty directory {dir}"))?;
                e
            } else {
                let e = d
                    .remove_entry(name)
                    .ok_or_else(|| format!("unlink of missing entry in {dir}"))?;
                if known.is_some_and(|k| k != e) {
                    return Err(format!("unlink in {dir}: the tree and the map disagree"));
                }
                e
            };
            if t == DT_DIR {
                d.attr.nlink = d.attr.nlink.saturating_sub(1);
            }
            d.attr.mtime_ns = *time_ns;
            d.attr.ctime_ns = *time_ns;
            let target = get(s, ino)?;
            target.attr.nlink = target
                .attr
                .nlink
                .checked_sub(1)
                .ok_or("link count underflow")?;
            target.attr.ctime_ns = *time_ns;
            fx.image_delta -= (DIRENT_RECORD_BYTES + name.len() as u64) as i64;
        }
        Op::SetSize { ino, size, time_ns } => {
            let d = get(s, *ino)?;
            if *size > crate::format::MAX_FILE_SIZE {
                return Err("size too large".into());
            }
            d.attr.size = *size;
            d.attr.mtime_ns = *time_ns;
            d.attr.ctime_ns = *time_ns;
        }
        Op::Map {
            ino,
            file_blk,
            dev_blk,
            len,
        }
        | Op::MapShared {
            ino,
            file_blk,
            dev_blk,
            len,
        } => {
            let d = get(s, *ino)?;
            let before = d.map.len();
            d.map.insert(*file_blk, *dev_blk, *len)?;
            fx.image_delta += (d.map.len() as i64 - before as i64) * EXTENT_RECORD_BYTES as i64;
            if matches!(op, Op::MapShared { .. }) {
                // At most one more refcount range (an upper bound: releases
                // are not subtracted until the next checkpoint measures it).
                fx.image_delta += REFCOUNT_RANGE_BYTES as i64;
                fx.shared.push((*dev_blk, *len));
            }
        }
        Op::Unmap { ino, file_blk, len } => {
            let d = get(s, *ino)?;
            let before = d.map.len();
            fx.freed.extend(d.map.remove(*file_blk, *len));
            fx.image_delta += (d.map.len() as i64 - before as i64) * EXTENT_RECORD_BYTES as i64;
        }
        Op::Shift {
            ino,
            from_blk,
            delta,
        } => {
            let d = get(s, *ino)?;
            let before = d.map.len();
            d.map.shift(*from_blk, *delta)?;
            fx.image_delta += (d.map.len() as i64 - before as i64) * EXTENT_RECORD_BYTES as i64;
        }
        Op::FreeInode { ino } => {
            let d = get(s, *ino)?;
            if d.is_dir() && d.entry_count() != 0 {
                return Err(format!("free of non-empty directory {ino}"));
            }
            if !d.is_dir() && d.attr.nlink != 0 {
                return Err(format!("free of linked inode {ino}"));
            }
            let mut d = s.delete(*ino).ok_or("free of missing inode")?;
            fx.image_delta -= d.image_bytes() as i64;
            fx.freed.extend(d.map.remove(0, u64::MAX));
            fx.deleted.push(*ino);
        }
        Op::Times {
            ino,
            atime_ns,
            mtime_ns,
            ctime_ns,
        } => {
            let d = get(s, *ino)?;
            d.attr.atime_ns = *atime_ns;
            d.attr.mtime_ns = *mtime_ns;
            d.attr.ctime_ns = *ctime_ns;
        }
        Op::SetParent { ino, parent } => {
            get(s, *ino)?.attr.parent = *parent;
        }
        Op::SetMode {
            ino,
            mode,
            uid,
            gid,
            time_ns,
        } => {
            let d = get(s, *ino)?;
            if d.attr.mode & S_IFMT != mode & S_IFMT {
                return Err("mode change alters the file type".into());
            }
            d.attr.mode = *mode;
            d.attr.uid = *uid;
            d.attr.gid = *gid;
            d.attr.ctime_ns = *time_ns;
        }
        Op::Symlink { ino, target } => {
            let d = get(s, *ino)?;
            if !d.is_symlink() || !d.target.is_empty() {
                return Err(format!("symlink target set on inode {ino}, not a new link"));
            }
            if target.is_empty() || target.len() > SYMLINK_MAX || target.contains(&0) {
                return Err(format!("inode {ino}: invalid symbolic link target"));
            }
            d.target = target.clone();
            d.attr.size = target.len() as u64;
        }
        Op::SetRdev { ino, rdev } => {
            let d = get(s, *ino)?;
            if !matches!(d.attr.mode & S_IFMT, S_IFCHR | S_IFBLK) {
                return Err(format!("device number set on inode {ino}, not a device"));
            }
            d.rdev = *rdev;
        }
        Op::Poison { dev_blk, len } | Op::Unpoison { dev_blk, len } => {
            if *len == 0 || dev_blk.checked_add(*len).is_none() {
                return Err(format!("bad-block range {dev_blk}+{len}"));
            }
            let poisoned = matches!(op, Op::Poison { .. });
            if poisoned {
                // At most one more bad-block range (an upper bound, as for refcounts).
                fx.image_delta += BADBLOCK_RANGE_BYTES as i64;
            }
            fx.bad.push((*dev_blk, *len, poisoned));
        }
    }
    Ok(())
}
