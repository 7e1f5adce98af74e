//! Size grants (format 3): how a client of the device's owner grows a file
//! with no round trip per write (docs/multiprocess.md, "Size grants").
//!
//! The owner allocates blocks past a file's end (`fallocate` with
//! `KEEP_SIZE`) and hands one client the right to grow the file into them,
//! up to a limit. The client copies its bytes in place, flushes them, and
//! then stores the new size in the grant's *size word* on the device: one
//! 8-byte store (size and check bits), so a crash leaves the old word or the
//! new one, and what the client acknowledged (an `fdatasync`) is durable
//! once the word is. The owner ends the grant before anything else looks at
//! the file (a `stat`, a lease, a write by another process): it reads the
//! word and commits the size through the journal, then frees the line. A
//! mount after a crash does the same for every grant still out.
//!
//! The lines live in the root block ([`GRANT_OFFSET`], [`GRANT_LINES`] of
//! them); the owner writes a line's fields and fences before it stores the
//! magic, so a line cut by a crash has no magic ([`GrantState::Torn`]) and
//! was never handed out.

use super::{Error, File, Fs, Meta, Result};
use crate::format::v3::{
    grant_word_size, Geometry3, GrantLine, GrantState, GRANT_LINES, GRANT_WORD, ROOT_LINE,
};
use crate::journal::Damage;

/// A grant handed out: its line and what it allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grant {
    pub index: usize,
    pub line: GrantLine,
    /// Device offset of the line.
    pub at: u64,
}

impl Grant {
    /// Device offset of the size word (the grantee stores sizes there with
    /// [`crate::format::v3::grant_word`]).
    pub fn word_at(&self) -> u64 {
        self.at + GRANT_WORD as u64
    }
}

fn line_at(fs: &Fs, index: usize) -> Result<u64> {
    match &fs.inner.meta {
        Meta::V3(v) => Ok(v.store.geometry().grant_line_at(index)),
        Meta::V2 { .. } => Err(Error::NotSupported("size grants need format 3")),
    }
}

/// Grant line `index` as stored: its device offset and what it holds.
fn read_line(
    dev: &dyn crate::device::Device,
    geo: &Geometry3,
    index: usize,
) -> (u64, Result<GrantState>) {
    let at = geo.grant_line_at(index);
    let mut b = [0u8; ROOT_LINE];
    let state = match dev.read(at, &mut b) {
        Ok(()) => GrantLine::decode(&b, at).map_err(Error::from),
        Err(e) => Err(e.into()),
    };
    (at, state)
}

fn not_its_file(line: &GrantLine) -> String {
    format!(
        "names inode {}, which is free, another file or not a regular file",
        line.ino
    )
}

/// Whether `line` names a regular file in use with the line's generation
/// (a line that verifies but names anything else is damage).
fn names_its_file(store: &crate::meta::Store, line: &GrantLine) -> bool {
    matches!(
        store.inode(line.ino),
        Ok(Some(s)) if s.generation == line.generation
            && s.attr.mode & crate::format::S_IFMT == crate::format::S_IFREG
    )
}

fn used_lines(fs: &Fs) -> Result<&crate::sync::Mutex<u64>> {
    match &fs.inner.meta {
        Meta::V3(v) => Ok(&v.grant_lines),
        Meta::V2 { .. } => Err(Error::NotSupported("size grants need format 3")),
    }
}

impl File {
    /// Hand out a size grant of this file: its size may grow up to `limit`
    /// bytes by stores to the grant's size word. The caller (the owner)
    /// allocated the blocks up to `limit` and holds the file's change
    /// lock; the line is durable on return. `Busy` when every line is out.
    pub fn open_grant(&self, limit: u64) -> Result<Grant> {
        if !self.writable() {
            return Err(Error::BadFd);
        }
        if self.fs().is_read_only() {
            return Err(Error::ReadOnly);
        }
        let base = self.len();
        if limit < base || limit >= crate::format::v3::GRANT_MAX_SIZE {
            return Err(Error::Invalid("grant limit"));
        }
        let generation = match &self.fs().inner.meta {
            Meta::V3(v) => {
                v.store
                    .inode(self.ino())?
                    .ok_or(Error::NotFound)?
                    .generation
            }
            Meta::V2 { .. } => return Err(Error::NotSupported("size grants need format 3")),
        };
        let index = {
            let mut used = used_lines(self.fs())?.lock();
            let i = (0..GRANT_LINES)
                .find(|&i| *used & 1 << i == 0)
                .ok_or_else(|| Error::Busy("every size grant line is out".into()))?;
            *used |= 1 << i;
            i
        };
        let at = line_at(self.fs(), index)?;
        let line = GrantLine {
            ino: self.ino(),
            generation,
            serial: next_serial(),
            base,
            limit,
        };
        let bytes = line.encode(at);
        let dev = &self.fs().inner.dev;
        let stored = (|| {
            // Fields first, then the magic: a crash between leaves no magic.
            dev.write(at + 8, &bytes[8..])?;
            dev.persist(at + 8, (ROOT_LINE - 8) as u64)?;
            dev.write(at, &bytes[..8])?;
            dev.persist(at, 8)
        })();
        if let Err(e) = stored {
            *used_lines(self.fs())?.lock() &= !(1 << index);
            return Err(e.into());
        }
        Ok(Grant { index, line, at })
    }
}

impl Fs {
    /// The size grant `g`'s word holds now (verified, inside the grant).
    pub fn grant_size(&self, g: &Grant) -> Result<u64> {
        let mut w = [0u8; 8];
        self.inner.dev.read(g.word_at(), &mut w)?;
        match grant_word_size(u64::from_le_bytes(w), g.word_at(), g.line.serial) {
            Some(s) if (g.line.base..=g.line.limit).contains(&s) => Ok(s),
            _ => Err(Error::Corrupted {
                what: format!(
                    "size grant line {} of inode {}: the size word does not verify",
                    g.index, g.line.ino
                ),
                device_offset: g.word_at(),
            }),
        }
    }

    /// End grant `g`: its line is free again (durably: a later mount does
    /// not apply it). The caller committed its size first.
    pub fn close_grant(&self, g: &Grant) -> Result<()> {
        clear_line(self, g.at)?;
        let mut used = used_lines(self)?.lock();
        *used &= !(1 << g.index);
        Ok(())
    }

    /// End grant `g` for good: its line is cleared (durably) but not handed
    /// out again by this mount (its holder may still store to it).
    pub fn retire_grant(&self, g: &Grant) -> Result<()> {
        clear_line(self, g.at)
    }

    /// At a writable mount of format 3: apply every grant still out (the
    /// owner or its client died with it) and free the lines. A line that
    /// does not verify, or names an inode that is not that file, is
    /// `Corrupted`; with `salvage` it is reported and cleared (the file
    /// keeps the size it had before the grant).
    pub(super) fn recover_grants(&self, salvage: bool) -> Result<()> {
        let Meta::V3(v) = &self.inner.meta else {
            return Ok(());
        };
        for index in 0..GRANT_LINES {
            let (at, state) = read_line(&*self.inner.dev, v.store.geometry(), index);
            let applied = match state {
                Ok(GrantState::Free) => continue,
                Ok(GrantState::Torn) => Ok(()),
                Ok(GrantState::Held(line, _)) if !names_its_file(&v.store, &line) => {
                    Err(Error::Corrupted {
                        what: not_its_file(&line),
                        device_offset: at,
                    })
                }
                Ok(GrantState::Held(line, size)) => self.apply_grant(at, &line, size),
                Err(e) => Err(e),
            };
            match applied {
                Ok(()) => {}
                Err(e @ Error::Corrupted { .. }) if salvage => {
                    tracing::warn!("size grant line {index}: {e}: cleared");
                }
                Err(Error::Corrupted { what, .. }) => {
                    return Err(Error::Corrupted {
                        what: format!("size grant line {index}: {what}"),
                        device_offset: at,
                    })
                }
                Err(e) => return Err(e),
            }
            clear_line(self, at)?;
        }
        Ok(())
    }

    /// Grow the file `line` names (checked by [`names_its_file`]) to
    /// `size`, its word's.
    fn apply_grant(&self, at: u64, line: &GrantLine, size: u64) -> Result<()> {
        let f = self.open_ino(line.ino, false, true, false)?;
        let len = f.len();
        if size > len {
            tracing::info!(
                "size grant of inode {}: size {len} -> {size} (a writer died holding it)",
                line.ino
            );
            // Only over blocks the grant allocated: a word past them (the
            // allocation did not commit) leaves the size as it was.
            if !f.extend_written(len, size)? {
                return Err(Error::Corrupted {
                    what: format!(
                        "names inode {}, whose blocks past its end are not its own",
                        line.ino
                    ),
                    device_offset: at,
                });
            }
        }
        Ok(())
    }
}

/// Damage in the size grant lines of a format-3 file system (fsck): a line
/// that does not verify, or names an inode that is free, another file or
/// not a regular file. A line that verifies is a growth the next writable
/// mount applies, not damage.
pub(super) fn check_lines(
    store: &crate::meta::Store,
    dev: &dyn crate::device::Device,
) -> Vec<Damage> {
    let mut found = Vec::new();
    for index in 0..GRANT_LINES {
        let (at, state) = read_line(dev, store.geometry(), index);
        let what = match state {
            Ok(GrantState::Free | GrantState::Torn) => None,
            Ok(GrantState::Held(line, _)) if names_its_file(store, &line) => None,
            Ok(GrantState::Held(line, _)) => Some(not_its_file(&line)),
            Err(e) => Some(e.to_string()),
        };
        if let Some(what) = what {
            found.push(Damage {
                what: format!("size grant line {index}: {what}"),
                device_offset: at,
                salvage: "the line is cleared; the file keeps its size from before the grant"
                    .into(),
            });
        }
    }
    found
}

/// Free the line at `at`: the magic first (a crash after it leaves a line
/// without magic, which nothing applies), then the rest.
fn clear_line(fs: &Fs, at: u64) -> Result<()> {
    let dev = &fs.inner.dev;
    dev.zero(at, 8)?;
    dev.persist(at, 8)?;
    dev.zero(at + 8, (ROOT_LINE - 8) as u64)?;
    dev.persist(at + 8, (ROOT_LINE - 8) as u64)?;
    Ok(())
}

/// A serial for a new grant: random, so lines reused within a run and
/// across runs get different ones (the clock's nanoseconds if the kernel
/// gives no random bytes).
fn next_serial() -> u32 {
    let mut b = [0u8; 4];
    match rustix::rand::getrandom(&mut b, rustix::rand::GetRandomFlags::NONBLOCK) {
        Ok(4) => u32::from_le_bytes(b),
        _ => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.subsec_nanos()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::{CrashDevice, Device, RamDevice, Survivors};
    use crate::format::v3::grant_word;
    use crate::fs::{falloc, fsck, MkfsOptions, MountOptions, OpenOptions};
    use crate::BLOCK_SIZE;
    use std::sync::Arc;

    /// What a grantee does for one growth: copy `data` at `at` into the
    /// file's blocks on the device, fence, then store the size word.
    fn grow(dev: &dyn Device, f: &File, g: &Grant, at: u64, data: &[u8]) -> u64 {
        let mut done = 0usize;
        while done < data.len() {
            let pos = at + done as u64;
            let (e, _) = f
                .extents_shared()
                .into_iter()
                .find(|(e, _)| (e.file_blk..e.file_blk + e.len).contains(&(pos / BLOCK_SIZE)))
                .expect("granted blocks");
            let dev_off =
                (e.dev_blk + (pos / BLOCK_SIZE - e.file_blk)) * BLOCK_SIZE + pos % BLOCK_SIZE;
            let n = (BLOCK_SIZE - pos % BLOCK_SIZE).min((data.len() - done) as u64) as usize;
            dev.write(dev_off, &data[done..done + n]).unwrap();
            dev.flush(dev_off, n as u64);
            done += n;
        }
        dev.fence().unwrap();
        let end = at + data.len() as u64;
        dev.write_word(g.word_at(), grant_word(end, g.word_at(), g.line.serial))
            .unwrap();
        dev.persist(g.word_at(), 8).unwrap();
        end
    }

    fn granted(fs: &Fs, path: &str, limit: u64) -> (File, Grant) {
        let f = fs.open(path, &OpenOptions::read_write()).unwrap();
        let size = f.len();
        f.fallocate(falloc::KEEP_SIZE, size, limit - size).unwrap();
        let g = f.open_grant(limit).unwrap();
        (f, g)
    }

    fn pattern(seed: u8, n: usize) -> Vec<u8> {
        (0..n).map(|i| seed ^ (i as u8).wrapping_mul(7)).collect()
    }

    #[test]
    fn g1_a_size_word_left_by_a_writer_that_died_is_applied_at_the_next_mount() {
        let dev = Arc::new(RamDevice::new(32 << 20));
        Fs::mkfs(&*dev, &MkfsOptions::default()).unwrap();
        let fs = Fs::mount(dev.clone()).unwrap();
        fs.create("/log", 0o644)
            .unwrap()
            .write_at(b"abc", 0)
            .unwrap();
        let (f, g) = granted(&fs, "/log", 256 << 10);
        let data = pattern(5, 10_000);
        let end = grow(&*dev, &f, &g, 3, &data);
        assert_eq!(f.len(), 3, "the owner's size lags until the grant ends");
        // The owner dies with the grant out: no end, no unmount.
        let image = dev.image();
        drop((f, fs));
        let dev = Arc::new(RamDevice::from_image(image));
        let fs = Fs::mount(dev.clone()).unwrap();
        let f = fs.open("/log", &OpenOptions::read_only()).unwrap();
        assert_eq!(f.len(), end);
        let mut back = vec![0u8; end as usize];
        f.read_at(&mut back, 0).unwrap();
        assert_eq!(&back[..3], b"abc");
        assert!(back[3..] == data[..]);
        drop(f);
        fs.unmount().unwrap();
        // The line is free again: a second mount applies nothing.
        let r = fsck(dev.clone()).unwrap();
        assert!(r.clean, "{:?}", r.problems);
        let mut line = [0u8; ROOT_LINE];
        dev.read(g.at, &mut line).unwrap();
        assert_eq!(line, [0u8; ROOT_LINE]);
    }

    #[test]
    fn g1_ending_a_grant_commits_its_size_and_frees_its_line_for_the_next() {
        let dev = Arc::new(RamDevice::new(32 << 20));
        Fs::mkfs(&*dev, &MkfsOptions::default()).unwrap();
        let fs = Fs::mount(dev.clone()).unwrap();
        fs.create("/a", 0o644).unwrap();
        let (f, g) = granted(&fs, "/a", 64 << 10);
        let end = grow(&*dev, &f, &g, 0, &pattern(1, 5000));
        assert_eq!(fs.grant_size(&g).unwrap(), end);
        assert!(f.extend_written(f.len(), end).unwrap());
        fs.close_grant(&g).unwrap();
        assert_eq!(f.len(), end);
        // Every line can be handed out, and one more is `Busy`.
        let all: Vec<Grant> = (0..GRANT_LINES)
            .map(|_| f.open_grant(f.len()).unwrap())
            .collect();
        assert_eq!(all[0].index, g.index, "the freed line comes back first");
        assert!(matches!(f.open_grant(f.len()), Err(Error::Busy(_))));
        for g in &all {
            fs.close_grant(g).unwrap();
        }
        drop(f);
        fs.unmount().unwrap();
    }

    #[test]
    fn g1_a_crash_at_every_fence_of_a_grant_keeps_every_acknowledged_growth() {
        let dev = Arc::new(CrashDevice::new(32 << 20));
        Fs::mkfs(&*dev, &MkfsOptions::default()).unwrap();
        let fs = Fs::mount(dev.clone()).unwrap();
        fs.create("/j", 0o644)
            .unwrap()
            .write_at(b"0123", 0)
            .unwrap();
        fs.sync().unwrap();
        dev.start_recording();
        let (f, g) = granted(&fs, "/j", 128 << 10);
        // (crash points done when each growth was acknowledged, its size)
        let mut acked = vec![(0, 4u64)];
        let mut at = 4;
        let mut want = b"0123".to_vec();
        for i in 0..3u8 {
            let data = pattern(i + 10, 3000 + 1000 * i as usize);
            at = grow(&*dev, &f, &g, at, &data);
            want.extend_from_slice(&data);
            acked.push((dev.crash_points(), at));
        }
        assert!(f.extend_written(f.len(), at).unwrap());
        fs.close_grant(&g).unwrap();
        let points = dev.crash_points();
        drop(f);
        for p in 0..=points {
            for surv in [Survivors::None, Survivors::All] {
                let img = dev.crash_image(p, &surv);
                let ram = Arc::new(RamDevice::from_image(img));
                let fs = Fs::mount_with(ram.clone(), &MountOptions::default())
                    .unwrap_or_else(|e| panic!("crash point {p} ({surv:?}): {e}"));
                let f = fs.open("/j", &OpenOptions::read_only()).unwrap();
                let size = f.len();
                let floor = acked
                    .iter()
                    .filter(|(q, _)| *q <= p)
                    .map(|a| a.1)
                    .max()
                    .unwrap();
                assert!(
                    size >= floor && acked.iter().any(|a| a.1 == size),
                    "crash point {p} ({surv:?}): size {size}, acknowledged {floor}"
                );
                let mut back = vec![0u8; size as usize];
                f.read_at(&mut back, 0).unwrap();
                assert!(back[..] == want[..size as usize], "crash point {p}: bytes");
                drop(f);
                fs.unmount().unwrap();
                let r = fsck(ram).unwrap();
                assert!(r.clean, "crash point {p} ({surv:?}): {:?}", r.problems);
            }
        }
        fs.unmount().unwrap();
    }

    #[test]
    fn g1_a_damaged_grant_line_is_corrupted_at_mount_named_by_fsck_and_salvage_clears_it() {
        let dev = Arc::new(RamDevice::new(32 << 20));
        Fs::mkfs(&*dev, &MkfsOptions::default()).unwrap();
        let fs = Fs::mount(dev.clone()).unwrap();
        fs.create("/d", 0o644).unwrap().write_at(b"xy", 0).unwrap();
        let (f, g) = granted(&fs, "/d", 64 << 10);
        grow(&*dev, &f, &g, 2, &pattern(3, 100));
        let image = dev.image();
        drop((f, fs));
        // A flipped bit in the line's fields, one in the size word, a size
        // word that verifies but lies past the limit.
        let word_past = grant_word(g.line.limit + 1, g.word_at(), g.line.serial);
        let damages: [(&str, u64, Vec<u8>); 3] = [
            ("inode field", g.at + 8, vec![image[g.at as usize + 8] ^ 1]),
            (
                "size word",
                g.word_at(),
                vec![image[g.word_at() as usize] ^ 1],
            ),
            (
                "size past the limit",
                g.word_at(),
                word_past.to_le_bytes().to_vec(),
            ),
        ];
        for (what, at, bytes) in damages {
            let ram = Arc::new(RamDevice::from_image(image.clone()));
            ram.write(at, &bytes).unwrap();
            match Fs::mount(ram.clone()) {
                Err(Error::Corrupted { what: w, .. }) => {
                    assert!(w.contains("size grant line"), "{what}: {w}")
                }
                other => panic!("{what}: mounted: {:?}", other.map(|_| ())),
            }
            // fsck names it; its repair clears it.
            let copy = Arc::new(RamDevice::from_image(ram.image()));
            let r = fsck(copy.clone()).unwrap();
            assert!(
                !r.clean && r.damage.iter().any(|d| d.what.contains("size grant line")),
                "{what}: fsck: {r:?}"
            );
            let r = crate::fs::fsck_repair(copy.clone()).unwrap();
            assert!(r.clean, "{what}: after the repair: {r:?}");
            assert_eq!(Fs::mount(copy).unwrap().stat("/d").unwrap().size, 2);
            let fs = Fs::mount_with(
                ram.clone(),
                &MountOptions {
                    salvage: true,
                    ..Default::default()
                },
            )
            .unwrap();
            assert_eq!(
                fs.stat("/d").unwrap().size,
                2,
                "{what}: the size before the grant"
            );
            fs.unmount().unwrap();
            Fs::mount(ram).unwrap().unmount().unwrap();
        }
    }

    #[test]
    fn g1_a_line_cut_before_its_magic_was_never_handed_out_and_is_cleared() {
        let dev = Arc::new(RamDevice::new(32 << 20));
        Fs::mkfs(&*dev, &MkfsOptions::default()).unwrap();
        let fs = Fs::mount(dev.clone()).unwrap();
        fs.create("/t", 0o644).unwrap();
        let (f, g) = granted(&fs, "/t", 64 << 10);
        let image = dev.image();
        drop((f, fs));
        let ram = Arc::new(RamDevice::from_image(image));
        ram.zero(g.at, 8).unwrap();
        let fs = Fs::mount(ram.clone()).unwrap();
        assert_eq!(fs.stat("/t").unwrap().size, 0);
        fs.unmount().unwrap();
        let mut line = [0u8; ROOT_LINE];
        ram.read(g.at, &mut line).unwrap();
        assert_eq!(line, [0u8; ROOT_LINE]);
    }
}
