//! Consistency checks shared by mount and fsck.

use super::state::InodeData;
use super::{recover, Error, Fs, MountOptions};
use crate::device::Device;
use crate::format::v3::AnySuperblock;
use crate::format::{
    dtype_of, Op, DT_DIR, ROOT_INO, SYMLINK_MAX, S_IFBLK, S_IFCHR, S_IFIFO, S_IFMT, S_IFSOCK,
};
use crate::journal::{Damage, Recovery};
use crate::BLOCK_SIZE;
use std::collections::HashMap;
use std::sync::Arc;

/// One thing wrong, and where.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    pub what: String,
    pub ino: Option<u64>,
    pub device_offset: Option<u64>,
}

/// The result of [`fsck`].
#[derive(Clone, Debug, serde::Serialize)]
pub struct FsckReport {
    pub clean: bool,
    pub problems: Vec<Problem>,
    pub inodes: u64,
    pub files: u64,
    pub directories: u64,
    pub used_blocks: u64,
    /// Blocks of the data area holding metadata (format 3's inode chunks and
    /// tree nodes; 0 on format 2, whose metadata has its own regions).
    pub metadata_blocks: u64,
    pub free_blocks: u64,
    /// Blocks referenced by more than one extent (reflink), each counted once
    /// in `used_blocks`.
    pub shared_blocks: u64,
    pub checkpoint_epoch: u64,
    pub log_records_replayed: u64,
    /// The log ended on a record that did not verify (a torn write at a crash;
    /// expected after a crash, not an error).
    pub torn_log_tail_at: Option<u64>,
    /// Valid records past the torn tail that no later record vouches for
    /// (never acknowledged to a caller): the next mount drops them.
    pub unacknowledged_records: u64,
    /// Damage: a superblock copy, checkpoint header or log record that fails
    /// where no crash could have left it so. Each says what a repair does.
    pub damage: Vec<Damage>,
    /// What the repair of `damage` loses: the changes of dropped log records.
    pub lost: Vec<String>,
    /// What `fsck --repair` did (empty for a check).
    pub repaired: Vec<String>,
    /// Orphans (unlinked while open) that the next mount reclaims.
    pub orphans: Vec<u64>,
    /// The bad-block table (SPEC E4): every device block with a media error and
    /// its owners (files sharing it by reflink all appear).
    pub bad_blocks: Vec<BadBlock>,
}

impl FsckReport {
    /// e2fsck's exit code: 0 clean, 1 errors repaired (now clean), 4 errors left.
    pub fn exit_code(&self) -> u8 {
        match (self.clean, self.repaired.is_empty()) {
            (true, true) => 0,
            (true, false) => 1,
            (false, _) => 4,
        }
    }
}

/// One device block with a media error, as fsck reports it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct BadBlock {
    pub dev_blk: u64,
    pub owners: Vec<super::Owner>,
    /// Every name of the files that own it (all hard links).
    pub paths: Vec<String>,
}

fn problem(what: String, ino: Option<u64>, off: Option<u64>) -> Problem {
    Problem {
        what,
        ino,
        device_offset: off,
    }
}

/// Check an in-memory state: extents inside the data area and owned once,
/// directory entries pointing at live inodes of the right type, link counts,
/// parents, and every inode reachable from the root (or an orphan).
/// What is wrong with symbolic link or special file `d` (`None` for a
/// sound one, or a file or directory): a link's size is its target's
/// length (1 to 4095 bytes, no NUL), and a target longer than fits its slot
/// has the one data block it lives in mapped at file block 0, a shorter
/// one none; a special file has no size and no blocks, and only a device
/// a device number.
fn node_problem(d: &InodeData) -> Option<String> {
    let kind = d.attr.mode & S_IFMT;
    if d.rdev != 0 && !matches!(kind, S_IFCHR | S_IFBLK) {
        return Some(format!(
            "device number {:#x} on an inode that is not a device",
            d.rdev
        ));
    }
    if matches!(kind, S_IFIFO | S_IFSOCK | S_IFCHR | S_IFBLK)
        && (d.attr.size != 0 || !d.map.is_empty())
    {
        return Some("special file with a size or data blocks".into());
    }
    if !d.is_symlink() {
        return (!d.target.is_empty())
            .then(|| "a target on an inode that is not a symbolic link".into());
    }
    let n = d.target.len();
    if n == 0 || n > SYMLINK_MAX || d.target.contains(&0) {
        return Some(format!("symbolic link with an invalid target ({n} bytes)"));
    }
    if d.attr.size != n as u64 {
        return Some(format!(
            "symbolic link of size {} to a {n}-byte target",
            d.attr.size
        ));
    }
    let blocks: Vec<_> = d.map.iter().collect();
    let inline = n <= crate::format::v3::INLINE_BYTES;
    let sound = if inline {
        blocks.is_empty()
    } else {
        blocks.len() == 1 && blocks[0].file_blk == 0 && blocks[0].len == 1
    };
    (!sound).then(|| {
        format!(
            "symbolic link of a {n}-byte target maps {} extents",
            blocks.len()
        )
    })
}

pub(crate) fn check_state(
    sb: &AnySuperblock,
    inodes: &HashMap<u64, InodeData>,
    refs: &super::RefTable,
) -> Vec<Problem> {
    let (data_start, total_blocks) = (sb.data_start(), sb.total_blocks());
    let mut out = Vec::new();
    let Some(root) = inodes.get(&ROOT_INO) else {
        out.push(problem(
            "root directory missing".into(),
            Some(ROOT_INO),
            None,
        ));
        return out;
    };
    if !root.is_dir() {
        out.push(problem(
            "root is not a directory".into(),
            Some(ROOT_INO),
            None,
        ));
        return out;
    }
    // Block ownership: every extent inside the data area, and each block
    // referenced by exactly as many extents as the refcount table says (one
    // for blocks the table does not list: reflink, SPEC R1).
    let mut inos: Vec<&u64> = inodes.keys().collect();
    inos.sort_unstable();
    let mut inside = Vec::new();
    for &ino in &inos {
        for e in inodes[ino].map.iter() {
            let end = e.dev_blk.checked_add(e.len);
            if e.dev_blk < data_start || end.is_none_or(|x| x > total_blocks) {
                out.push(problem(
                    format!("extent {}+{} outside the data area", e.dev_blk, e.len),
                    Some(*ino),
                    Some(e.dev_blk.saturating_mul(BLOCK_SIZE)),
                ));
                continue;
            }
            inside.push((e.dev_blk, e.len, *ino));
        }
    }
    let cov = super::refs::coverage(inside.iter().map(|&(s, l, _)| (s, l)));
    for (blk, table, extents) in super::refs::mismatches(refs, &cov) {
        let mut owners: Vec<u64> = inside
            .iter()
            .filter(|&&(s, l, _)| (s..s + l).contains(&blk))
            .map(|&(_, _, i)| i)
            .collect();
        owners.dedup();
        let list = owners
            .iter()
            .map(|i| format!("inode {i}"))
            .collect::<Vec<_>>()
            .join(", ");
        out.push(problem(
            format!(
                "device block {blk}: referenced by {extents} extents ({}) but its reference count is {table}",
                if list.is_empty() { "none".into() } else { list }
            ),
            owners.first().copied(),
            Some(blk * BLOCK_SIZE),
        ));
    }
    // Links and types.
    let mut links: HashMap<u64, u32> = HashMap::new();
    let mut subdirs: HashMap<u64, u32> = HashMap::new();
    for &ino in &inos {
        let d = &inodes[ino];
        if !d.is_dir() && !d.dir.is_empty() {
            out.push(problem(
                "file has directory entries".into(),
                Some(*ino),
                None,
            ));
        }
        if let Some(what) = node_problem(d) {
            out.push(problem(what, Some(*ino), None));
        }
        for (name, &(child, t)) in &d.dir {
            let name = String::from_utf8_lossy(name);
            let Some(c) = inodes.get(&child) else {
                out.push(problem(
                    format!("entry {name:?} points at missing inode {child}"),
                    Some(*ino),
                    None,
                ));
                continue;
            };
            if t != dtype_of(c.attr.mode) {
                out.push(problem(
                    format!("entry {name:?} has the wrong type"),
                    Some(*ino),
                    None,
                ));
            }
            *links.entry(child).or_default() += 1;
            if c.is_dir() {
                *subdirs.entry(*ino).or_default() += 1;
                if c.attr.parent != *ino {
                    out.push(problem(
                        format!(
                            "directory {child} ({name:?}) names parent {} not {ino}",
                            c.attr.parent
                        ),
                        Some(child),
                        None,
                    ));
                }
            }
        }
    }
    for &ino in &inos {
        let d = &inodes[ino];
        let l = links.get(ino).copied().unwrap_or(0);
        if d.is_dir() {
            let want = 2 + subdirs.get(ino).copied().unwrap_or(0);
            let names = if *ino == ROOT_INO { 0 } else { 1 };
            if l != names {
                out.push(problem(
                    format!("directory has {l} names (want {names})"),
                    Some(*ino),
                    None,
                ));
            }
            if d.attr.nlink != want {
                out.push(problem(
                    format!("directory link count {} (want {want})", d.attr.nlink),
                    Some(*ino),
                    None,
                ));
            }
        } else if d.attr.nlink != l {
            out.push(problem(
                format!("link count {} but {l} entries", d.attr.nlink),
                Some(*ino),
                None,
            ));
        }
    }
    // Every directory reachable from the root (cycles show up as unreachable).
    for &ino in &inos {
        if !inodes[ino].is_dir() {
            continue;
        }
        let mut p = *ino;
        let mut steps = 0;
        while p != ROOT_INO {
            match inodes.get(&p) {
                Some(d) if d.is_dir() => p = d.attr.parent,
                _ => break,
            }
            steps += 1;
            if steps > inodes.len() {
                out.push(problem(
                    "directory not reachable from the root".into(),
                    Some(*ino),
                    None,
                ));
                break;
            }
        }
    }
    out
}

/// What fsck reads off a device of either format.
struct Facts {
    sb: AnySuperblock,
    sb_damage: Option<(u64, String)>,
    inodes: HashMap<u64, InodeData>,
    refs: super::RefTable,
    bad: rangemap::RangeSet<u64>,
    epoch: u64,
    replayed: usize,
    torn_tail_at: Option<u64>,
    unacknowledged: u64,
    damage: Vec<Damage>,
    lost: Vec<String>,
    /// Findings of the format's own structure check (format 3's store),
    /// and the data-area blocks its metadata holds.
    structure: Vec<String>,
    metadata_blocks: u64,
    /// The metadata structure a device block belongs to.
    metadata_owner: Box<dyn Fn(u64) -> Option<super::Owner>>,
}

fn facts_v2(dev: &dyn Device) -> Result<Facts, Error> {
    let rec = recover(dev, Recovery::Salvage)?;
    let lost = lost_changes(
        &rec.inodes,
        &rec.loaded.log.lost_unnamed,
        rec.loaded.log.discarded.iter().flat_map(|(_, ops)| ops),
    );
    let g = rec.sb.geometry;
    let active = rec.loaded_epoch % 2;
    Ok(Facts {
        sb: AnySuperblock::V2(rec.sb),
        sb_damage: rec.sb_damage,
        inodes: rec.inodes,
        refs: rec.refs,
        bad: rec.bad,
        epoch: rec.loaded_epoch,
        replayed: rec.replayed,
        torn_tail_at: rec.loaded.log.torn_tail_at,
        unacknowledged: rec.loaded.log.unacknowledged,
        damage: rec.loaded.log.damage,
        lost,
        structure: Vec::new(),
        metadata_blocks: 0,
        metadata_owner: Box::new(move |b| super::poison::metadata_owner(&g, active, b)),
    })
}

fn facts_v3(dev: Arc<dyn Device>) -> Result<Facts, Error> {
    let o = super::format3::open(dev.clone(), Recovery::Salvage, true)?;
    let mut damage = o.damage.clone();
    damage.extend(super::grants::check_lines(&o.store, &*dev));
    let l = super::format3::load_all(&o.store)?;
    let checked = o.store.check()?;
    let lost = lost_changes(&l.inodes, &o.lost_unnamed, o.lost_ops.iter());
    let g = o.sb.geometry;
    Ok(Facts {
        sb: AnySuperblock::V3(o.sb),
        sb_damage: o.sb_damage,
        inodes: l.inodes,
        refs: l.tables.refs,
        bad: l.tables.bad,
        epoch: o.epoch,
        replayed: o.replayed,
        torn_tail_at: o.torn_tail_at,
        unacknowledged: o.unacknowledged,
        damage,
        lost,
        structure: checked.problems,
        metadata_blocks: checked.meta_blocks,
        metadata_owner: Box::new(move |b| super::poison::metadata_owner3(&g, b)),
    })
}

/// Check the file system on `dev` without changing it (read-only; format
/// 3's log is replayed into memory).
pub fn fsck(dev: Arc<dyn Device>) -> Result<FsckReport, Error> {
    let rec = match super::read_superblock_with(&*dev, AnySuperblock::decode)?.0 {
        AnySuperblock::V2(_) => facts_v2(&*dev)?,
        AnySuperblock::V3(_) => facts_v3(dev)?,
    };
    let mut problems = check_state(&rec.sb, &rec.inodes, &rec.refs);
    problems.extend(rec.structure.iter().map(|w| problem(w.clone(), None, None)));
    let cov = super::refs::coverage_of(rec.inodes.values());
    let used: u64 = cov.iter().map(|(r, _)| r.end - r.start).sum();
    let shared: u64 = cov
        .iter()
        .filter(|(_, c)| *c > 1)
        .map(|(r, _)| r.end - r.start)
        .sum();
    let dirs = rec.inodes.values().filter(|d| d.is_dir()).count() as u64;
    let mut orphans: Vec<u64> = rec
        .inodes
        .iter()
        .filter(|(_, d)| !d.is_dir() && d.attr.nlink == 0)
        .map(|(&i, _)| i)
        .collect();
    orphans.sort_unstable();
    let mut bad_blocks = Vec::new();
    let names = if rec.bad.is_empty() {
        HashMap::new()
    } else {
        names_of(&rec.inodes)
    };
    for r in rec.bad.iter() {
        for blk in r.clone() {
            let owners = match (rec.metadata_owner)(blk) {
                Some(m) => vec![m],
                None => {
                    let mut v: Vec<super::Owner> = rec
                        .inodes
                        .iter()
                        .flat_map(|(&ino, d)| {
                            d.map
                                .iter()
                                .filter(|e| (e.dev_blk..e.dev_blk + e.len).contains(&blk))
                                .map(move |e| super::Owner::File {
                                    ino,
                                    file_off: (e.file_blk + (blk - e.dev_blk)) * BLOCK_SIZE,
                                })
                                .collect::<Vec<_>>()
                        })
                        .collect();
                    v.sort_by_key(|o| match o {
                        super::Owner::File { ino, file_off } => (*ino, *file_off),
                        _ => (0, 0),
                    });
                    if v.is_empty() {
                        v.push(super::Owner::Free);
                    }
                    v
                }
            };
            // A media error in a file's data or in metadata is data lost
            // (an error left); one in free space is only quarantined.
            for o in &owners {
                if let super::Owner::File { ino, file_off } = o {
                    let named = names
                        .get(ino)
                        .map_or("an unlinked file".into(), |v| v.join(", "));
                    problems.push(problem(
                        format!("media error in file data at file offset {file_off} ({named})"),
                        Some(*ino),
                        Some(blk * BLOCK_SIZE),
                    ));
                } else if let super::Owner::Metadata { what, .. } = o {
                    problems.push(problem(
                        format!("media error in the {what}"),
                        None,
                        Some(blk * BLOCK_SIZE),
                    ));
                }
            }
            let mut paths: Vec<String> = owners
                .iter()
                .filter_map(|o| match o {
                    super::Owner::File { ino, .. } => names.get(ino),
                    _ => None,
                })
                .flatten()
                .cloned()
                .collect();
            paths.dedup();
            bad_blocks.push(BadBlock {
                dev_blk: blk,
                owners,
                paths,
            });
        }
    }
    let mut damage = rec.damage.clone();
    if let Some((at, what)) = &rec.sb_damage {
        damage.insert(
            0,
            Damage {
                what: what.clone(),
                device_offset: *at,
                salvage: "rewritten from the other copy".into(),
            },
        );
    }
    Ok(FsckReport {
        clean: problems.is_empty() && damage.is_empty(),
        problems,
        inodes: rec.inodes.len() as u64,
        files: rec.inodes.len() as u64 - dirs,
        directories: dirs,
        used_blocks: used,
        metadata_blocks: rec.metadata_blocks,
        shared_blocks: shared,
        free_blocks: rec
            .sb
            .data_blocks()
            .saturating_sub(used + rec.metadata_blocks),
        checkpoint_epoch: rec.epoch,
        log_records_replayed: rec.replayed as u64,
        torn_log_tail_at: rec.torn_tail_at,
        unacknowledged_records: rec.unacknowledged,
        lost: rec.lost,
        damage,
        repaired: Vec::new(),
        orphans,
        bad_blocks,
    })
}

/// `fsck --repair`: check, and if a superblock copy, checkpoint header or log
/// record is damaged, mount with salvage (the newest checkpoint's header
/// rebuilt from its body, or the older checkpoint; the log cut before the
/// damaged record), write the result as a new checkpoint, and check again.
/// [`FsckReport::repaired`] says what was done and [`FsckReport::lost`] what
/// that lost. Problems in the file tree itself are reported, not repaired.
pub fn fsck_repair(dev: Arc<dyn Device>) -> Result<FsckReport, Error> {
    let before = fsck(dev.clone())?;
    if before.damage.is_empty() {
        return Ok(before);
    }
    let fs = Fs::mount_with(
        dev.clone(),
        &MountOptions {
            read_only: false,
            salvage: true,
        },
    )?;
    fs.unmount()?;
    let mut after = fsck(dev.clone())?;
    after.repaired = before
        .damage
        .iter()
        .map(|d| format!("{}: {}", d.what, d.salvage))
        .collect();
    after.lost = before.lost;
    Ok(after)
}

/// Every name of every inode reachable from the root (all hard links, sorted).
fn names_of(inodes: &HashMap<u64, InodeData>) -> HashMap<u64, Vec<String>> {
    let mut paths: HashMap<u64, Vec<String>> = HashMap::new();
    paths.insert(ROOT_INO, vec!["/".into()]);
    let mut stack = vec![ROOT_INO];
    while let Some(dir) = stack.pop() {
        let Some(d) = inodes.get(&dir) else { continue };
        let base = paths[&dir][0].trim_end_matches('/').to_string();
        for (name, &(child, t)) in &d.dir {
            let p = format!("{base}/{}", String::from_utf8_lossy(name));
            let seen = paths.contains_key(&child);
            paths.entry(child).or_default().push(p);
            if t == DT_DIR && !seen {
                stack.push(child);
            }
        }
    }
    for v in paths.values_mut() {
        v.sort();
    }
    paths
}

/// What a salvage of `loaded` dropped: a checkpoint it rolled back past, and
/// what the ops of the discarded log records would have changed,
/// named by path where `inodes` (the state kept) knows it; one line per
/// change, in log order, without repeats.
pub(crate) fn lost_changes<'a>(
    inodes: &HashMap<u64, InodeData>,
    lost_unnamed: &[String],
    discarded: impl IntoIterator<Item = &'a Op>,
) -> Vec<String> {
    let paths = names_of(inodes);
    let name = |ino: &u64| {
        paths
            .get(ino)
            .map(|v| v[0].clone())
            .unwrap_or_else(|| format!("inode {ino}"))
    };
    let entry = |dir: &u64, n: &[u8]| {
        format!(
            "{}/{}",
            name(dir).trim_end_matches('/'),
            String::from_utf8_lossy(n)
        )
    };
    let mut out: Vec<String> = lost_unnamed.to_vec();
    for op in discarded {
        let line = match op {
            Op::NewInode { ino, .. } => format!("inode {ino}: created"),
            Op::Link {
                dir, ino, name: n, ..
            } => format!("{}: linked to inode {ino}", entry(dir, n)),
            Op::Unlink { dir, name: n, .. } => format!("{}: unlinked", entry(dir, n)),
            Op::SetSize { ino, size, .. } => format!("{}: size set to {size}", name(ino)),
            Op::Map { ino, .. }
            | Op::MapShared { ino, .. }
            | Op::Unmap { ino, .. }
            | Op::Shift { ino, .. } => {
                format!("{}: data blocks changed", name(ino))
            }
            Op::FreeInode { ino } => format!("{}: freed", name(ino)),
            Op::Times { ino, .. } => format!("{}: times set", name(ino)),
            Op::SetParent { ino, parent } => format!("{}: moved under {}", name(ino), name(parent)),
            Op::SetMode { ino, .. } => format!("{}: mode or owner changed", name(ino)),
            Op::SetRdev { ino, rdev } => format!("{}: device number {rdev:#x}", name(ino)),
            Op::Symlink { ino, target } => format!(
                "{}: symbolic link to {}",
                name(ino),
                String::from_utf8_lossy(target)
            ),
            Op::Poison { dev_blk, len } => format!("device blocks {dev_blk}+{len}: marked bad"),
            Op::Unpoison { dev_blk, len } => format!("device blocks {dev_blk}+{len}: repaired"),
        };
        if !out.contains(&line) {
            out.push(line);
        }
    }
    out
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::device::RamDevice;
    use crate::fs::{Fs, MkfsOptions};

    /// Two files mapping one block with no refcount recorded (or a count that
    /// disagrees) is reported with the block and both owners.
    #[test]
    fn r1_fsck_checks_refcounts_against_extent_maps() {
        let dev = RamDevice::new(8 << 20);
        let sb = Fs::mkfs(
            &dev,
            &MkfsOptions {
                format: 2,
                ..Default::default()
            },
        )
        .unwrap();
        let rec = recover(&dev, Recovery::Strict).unwrap();
        let mut inodes = rec.inodes;
        let d0 = sb.data_start();
        let mut a = InodeData::default();
        a.attr.mode = crate::format::S_IFREG | 0o644;
        a.map.insert(0, d0, 4).unwrap();
        let mut b = a.clone();
        b.map = Default::default();
        b.map.insert(10, d0 + 2, 2).unwrap();
        // Orphans (nlink 0) are fine for this check: no link problems.
        inodes.insert(7, a);
        inodes.insert(8, b);
        let empty = super::super::RefTable::default();
        let p = check_state(&sb, &inodes, &empty);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].what.contains(&format!("device block {}", d0 + 2)),
            "{p:?}"
        );
        assert!(p[0].what.contains("inode 7, inode 8"), "{p:?}");
        assert_eq!(p[0].device_offset, Some((d0 + 2) * BLOCK_SIZE));
        // The right table: clean. A wrong count: reported.
        let good = super::super::RefTable::from_ranges(&[(d0 + 2, 2, 2)]).unwrap();
        assert!(check_state(&sb, &inodes, &good).is_empty());
        let wrong = super::super::RefTable::from_ranges(&[(d0 + 2, 2, 3)]).unwrap();
        let p = check_state(&sb, &inodes, &wrong);
        assert!(p[0].what.contains("reference count is 3"), "{p:?}");
        let stale =
            super::super::RefTable::from_ranges(&[(d0 + 2, 2, 2), (d0 + 50, 1, 2)]).unwrap();
        let p = check_state(&sb, &inodes, &stale);
        assert!(p[0].what.contains("referenced by 0 extents"), "{p:?}");
    }
}
