//! Directory entries where they live: format 3 keeps a directory's entries
//! only in its tree on the device (docs/architecture.md, "Metadata in
//! place", "Memory"); a directory's cell holds its attributes and the
//! entry count, never the entries (`InodeData::on_device`). Lookups,
//! existence and emptiness checks, listings and the name of a directory in
//! its parent read the tree, under the directory's cell lock (a
//! transaction on a directory holds its write lock through its store, so
//! a reader holding the read lock sees the tree at rest). Format 2 keeps
//! its in-memory map and answers the same calls from it.
//!
//! Listings come in pages whose cookies are the entries' name hashes
//! ([`crate::format::v3::name_hash`]; format 2: the same SipHash keyed by
//! the first 8 bytes of the file system's UUID): an entry keeps its cookie
//! while it exists, so a listing paged by cookie returns every entry
//! present for its whole length exactly once, whatever is added or removed
//! meanwhile. Names sharing a hash share a cookie and come in one page.
//!
//! A small bounded cache of recent lookups ([`LookupCache`]) spares a tree
//! walk per path component on format 3.

use super::format3::V3;
use super::perm::R;
use super::state::InodeData;
use super::{DirEntry, Error, Fs, Meta, Result};
use crate::format::v3::{name_hash, DirEntry3};
use crate::meta::BTree;
use crate::sync::Mutex;
use std::hash::BuildHasher;

/// Cookie of `.` in a listing (never an entry's: name hashes are >= 2).
pub const COOKIE_DOT: u64 = 0;
/// Cookie of `..`.
pub const COOKIE_DOTDOT: u64 = 1;

/// One page of a directory listing ([`Fs::read_dir_page`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct DirPage {
    /// Entries in cookie order, each with its cookie (`.` and `..` are not
    /// listed; their cookies, 0 and 1, are never an entry's).
    pub entries: Vec<(u64, DirEntry)>,
    /// The cookie to ask for next; `None`: the listing is complete.
    pub next: Option<u64>,
}

/// Shards of the lookup cache, and entries per shard (powers of two).
const LOOKUP_SHARDS: usize = 16;
const LOOKUP_SHARD_CAP: usize = 1024;

/// One shard of the lookup cache: slots by the `(dir, name)` hash, made on
/// the shard's first put.
type Shard = Mutex<Vec<Option<Cached>>>;

struct Cached {
    /// The `(dir, name)` hash.
    key: u64,
    dir: u64,
    name: Box<[u8]>,
    ino: u64,
    file_type: u8,
}

/// Recent lookups on format 3, `(directory, name) -> (inode, d_type)`:
/// direct-mapped, `LOOKUP_SHARDS * LOOKUP_SHARD_CAP` slots (an entry puts
/// out the one in its slot: one name freed, where emptying a full map
/// freed a thousand inside one lookup). Only found entries are kept. Coherence: an entry is put only
/// while the directory's tree is at rest and held so (its cell's read
/// lock, or the cell table's read lock when the directory is not in
/// memory: `Fs::lookup_at_rest`), or by the transaction that linked the
/// name, after its store and still under the directory's write lock; every
/// transaction that links or unlinks a name forgets it first under that
/// lock (`Fs::run_tx_v3`), so no put can come between a change and its
/// forgetting.
pub(crate) struct LookupCache {
    keys: std::hash::RandomState,
    shards: Box<[Shard]>,
}

impl std::fmt::Debug for LookupCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LookupCache").finish_non_exhaustive()
    }
}

impl LookupCache {
    pub fn new() -> Self {
        LookupCache {
            keys: std::hash::RandomState::new(),
            shards: (0..LOOKUP_SHARDS).map(|_| Mutex::new(Vec::new())).collect(),
        }
    }

    /// The `(dir, name)` hash, its shard, and its slot in the shard.
    fn slot(&self, dir: u64, name: &[u8]) -> (u64, &Shard, usize) {
        let k = self.keys.hash_one((dir, name));
        let shard = &self.shards[k as usize % LOOKUP_SHARDS];
        (k, shard, (k as usize / LOOKUP_SHARDS) % LOOKUP_SHARD_CAP)
    }

    pub fn get(&self, dir: u64, name: &[u8]) -> Option<(u64, u8)> {
        let (k, shard, i) = self.slot(dir, name);
        let s = shard.lock();
        let c = s.get(i)?.as_ref()?;
        (c.key == k && c.dir == dir && *c.name == *name).then_some((c.ino, c.file_type))
    }

    pub fn put(&self, dir: u64, name: &[u8], (ino, file_type): (u64, u8)) {
        let (key, shard, i) = self.slot(dir, name);
        let new = Some(Cached {
            key,
            dir,
            name: name.into(),
            ino,
            file_type,
        });
        let mut s = shard.lock();
        if s.is_empty() {
            s.resize_with(LOOKUP_SHARD_CAP, || None);
        }
        let old = std::mem::replace(&mut s[i], new);
        drop(s);
        drop(old);
    }

    pub fn forget(&self, dir: u64, name: &[u8]) {
        let (k, shard, i) = self.slot(dir, name);
        let mut s = shard.lock();
        let old = match s.get_mut(i) {
            Some(slot) if slot.as_ref().is_some_and(|c| c.key == k) => slot.take(),
            _ => None,
        };
        drop(s);
        drop(old);
    }
}

/// A whole listing of directory `dir` (data `d`) found `n` entries in its
/// tree: a count in its slot that differs is damage (an entry lost from a
/// leaf under a valid checksum), not a smaller directory.
fn counted(dir: u64, d: &InodeData, n: usize) -> Result<()> {
    if n as u64 == d.entries {
        return Ok(());
    }
    Err(Error::Corrupted {
        what: format!(
            "directory {dir}: its tree holds {n} entries, its inode counts {}",
            d.entries
        ),
        device_offset: d.tree_root * crate::BLOCK_SIZE,
    })
}

/// `entries` (sorted by cookie) cut after `max` distinct cookies; `more`:
/// entries past the last one given may exist.
fn cut(mut entries: Vec<(u64, DirEntry)>, max: usize) -> DirPage {
    let max = max.max(1);
    let mut keys = 0;
    let mut last = None;
    for i in 0..entries.len() {
        let c = entries[i].0;
        if last != Some(c) {
            keys += 1;
            last = Some(c);
            if keys > max {
                entries.truncate(i);
                return DirPage {
                    entries,
                    next: Some(c),
                };
            }
        }
    }
    DirPage {
        entries,
        next: None,
    }
}

fn entry(cookie: u64, e: DirEntry3) -> (u64, DirEntry) {
    (
        cookie,
        DirEntry {
            name: String::from_utf8_lossy(&e.name).into_owned(),
            ino: e.ino,
            file_type: e.file_type,
        },
    )
}

impl Fs {
    /// The lookup cache (format 3 only).
    pub(super) fn lookups(&self) -> Option<&LookupCache> {
        match &self.inner.meta {
            Meta::V3(v3) => Some(&v3.lookups),
            Meta::V2 { .. } => None,
        }
    }

    fn v3_of(&self, dir: u64) -> Result<&V3> {
        match &self.inner.meta {
            Meta::V3(v3) => Ok(v3),
            Meta::V2 { .. } => Err(Error::Corrupted {
                what: format!("directory {dir}: entries on the device of a format-2 mount"),
                device_offset: 0,
            }),
        }
    }

    /// Entry `name` of directory `dir`, whose data `d` the caller holds
    /// locked (read or write): from the map, or one path of its tree.
    pub(super) fn entry_in(
        &self,
        dir: u64,
        d: &InodeData,
        name: &[u8],
    ) -> Result<Option<(u64, u8)>> {
        if !d.on_device || d.freed {
            return Ok(d.dir.get(name).copied());
        }
        let tree = BTree {
            root: d.tree_root,
            owner: dir,
        };
        Ok(self
            .v3_of(dir)?
            .store
            .dir_lookup(tree, name)?
            .map(|e| (e.ino, e.file_type)))
    }

    /// Directory `dir` (its data `d` held locked) has no entry: the tree
    /// is asked, not the count its slot keeps.
    pub(super) fn dir_is_empty(&self, dir: u64, d: &InodeData) -> Result<bool> {
        if !d.on_device || d.freed {
            return Ok(d.dir.is_empty());
        }
        let tree = BTree {
            root: d.tree_root,
            owner: dir,
        };
        Ok(self.v3_of(dir)?.store.dir_range(tree, 0, 1)?.is_empty())
    }

    /// The first name of `child` in directory `dir` (data `d` held locked),
    /// if any: a scan of the directory (the path of a renamed directory).
    pub(super) fn name_in(&self, dir: u64, d: &InodeData, child: u64) -> Result<Option<Vec<u8>>> {
        if !d.on_device || d.freed {
            return Ok(d
                .dir
                .iter()
                .find(|(_, &(i, _))| i == child)
                .map(|(n, _)| n.clone()));
        }
        let v3 = self.v3_of(dir)?;
        let tree = BTree {
            root: d.tree_root,
            owner: dir,
        };
        let mut from = 0;
        loop {
            let batch = v3.store.dir_range(tree, from, 256)?;
            let Some(&(last, _)) = batch.last() else {
                return Ok(None);
            };
            if let Some((_, e)) = batch.into_iter().find(|(_, e)| e.ino == child) {
                return Ok(Some(e.name));
            }
            from = last + 1;
        }
    }

    /// Every entry of directory `dir` (data `d` held locked), sorted by name.
    pub(super) fn all_entries(&self, dir: u64, d: &InodeData) -> Result<Vec<DirEntry>> {
        if !d.on_device || d.freed {
            return Ok(d
                .dir
                .iter()
                .map(|(n, &(i, t))| DirEntry {
                    name: String::from_utf8_lossy(n).into_owned(),
                    ino: i,
                    file_type: t,
                })
                .collect());
        }
        let tree = BTree {
            root: d.tree_root,
            owner: dir,
        };
        let mut all = self.v3_of(dir)?.store.dir_range(tree, 0, usize::MAX)?;
        counted(dir, d, all.len())?;
        all.sort_unstable_by(|a, b| a.1.name.cmp(&b.1.name));
        Ok(all.into_iter().map(|(c, e)| entry(c, e).1).collect())
    }

    /// Up to `max` cookies' entries of directory `dir` (data `d` held
    /// locked) from cookie `from` on.
    fn page_in(&self, dir: u64, d: &InodeData, from: u64, max: usize) -> Result<DirPage> {
        let max = max.max(1);
        if !d.on_device || d.freed {
            // Format 2: the hashes of the map's names, sorted (O(entries)
            // per page; format 2 holds every entry in memory anyway).
            let uuid = self.inner.sb.uuid();
            let key = u64::from_le_bytes(uuid[..8].try_into().expect("8 bytes"));
            let mut all: Vec<(u64, DirEntry)> = d
                .dir
                .iter()
                .map(|(n, &(i, t))| (name_hash(key, n), n, i, t))
                .filter(|&(c, ..)| c >= from)
                .map(|(c, n, i, t)| {
                    entry(
                        c,
                        DirEntry3 {
                            ino: i,
                            file_type: t,
                            name: n.clone(),
                        },
                    )
                })
                .collect();
            all.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.name.cmp(&b.1.name)));
            return Ok(cut(all, max));
        }
        let tree = BTree {
            root: d.tree_root,
            owner: dir,
        };
        let got = self
            .v3_of(dir)?
            .store
            .dir_range(tree, from, max.saturating_add(1))?;
        let page = cut(got.into_iter().map(|(c, e)| entry(c, e)).collect(), max);
        if from == 0 && page.next.is_none() {
            counted(dir, d, page.entries.len())?;
        }
        Ok(page)
    }

    /// One page of the listing of directory `path`: the entries of up to
    /// `max` (at least 1) cookies from cookie `from` on (0 from the
    /// start), in cookie order, and the cookie to go on from. An entry
    /// present through a whole listing comes exactly once, whatever is
    /// added or removed between pages; names sharing a cookie come in one
    /// page (so a page may hold a few more than `max` entries).
    pub fn read_dir_page(&self, path: &str, from: u64, max: usize) -> Result<DirPage> {
        let ino = self.resolve(path)?;
        self.read_dir_page_ino(ino, from, max)
    }

    /// [`Fs::read_dir_page`] of directory inode `ino`.
    pub fn read_dir_page_ino(&self, ino: u64, from: u64, max: usize) -> Result<DirPage> {
        let cell = self.cell(ino)?;
        let d = cell.data.read();
        if !d.is_dir() {
            return Err(Error::NotDir);
        }
        if d.freed {
            return Err(Error::NotFound);
        }
        self.permit(&d.attr, R, "read permission on the directory")?;
        self.page_in(ino, &d, from, max)
    }
}
