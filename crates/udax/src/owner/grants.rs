//! Size grants, the owner's side (docs/multiprocess.md, "Size grants"; the
//! lines on the device are `fs::grants`).
//!
//! A client that keeps growing a file (appends, sequential writes at its
//! end) asks for a grant: the owner allocates blocks past the end, recalls
//! every other client's layout of the file, writes a grant line and answers
//! with the size word's place. The holder then grows the file with no
//! request: bytes copied in place, then the size stored in the word. The
//! file's size as the owner knows it is stale while a grant is out, so
//! before anything looks at it or changes it the grant is *settled*
//! ([`settle_locked`]): the holder is told to stop (`Settle` on its
//! callback channel), the word's size is committed through the journal,
//! the unused blocks past it are freed and the line is cleared. A holder
//! that does not answer is cut off, and a dead one's grants end from their
//! words alone.

use super::{ask, change_lock, drop_client, file_of, recall, Shared};
use crate::fs::{falloc, Error, File, Grant, Result};
use crate::proto::Reply;
use crate::sync::Mutex;
use crate::BLOCK_SIZE;
use std::os::fd::AsFd;
use std::sync::Arc;

/// The most one grant covers past the end of the file (the first covers
/// what the client asks, at least [`GRANT_MIN_BYTES`]; a client doubles
/// what it asks at each renewal).
pub(super) const GRANT_MAX_BYTES: u64 = 8 << 20;
/// The least one grant covers past the end of the file.
pub(super) const GRANT_MIN_BYTES: u64 = 64 * BLOCK_SIZE;

/// A size grant out.
#[derive(Debug)]
pub(super) struct GrantOut {
    client: u64,
    grant: Grant,
    /// The owner's own open of the file: it keeps an unlinked file alive
    /// until the grant ends, and commits the size.
    file: File,
    /// Whether the grant ended (its size committed, its line freed), under
    /// the lock whoever ends it holds: a change that finds the grant waits
    /// here until the size it reads is final.
    ended: Mutex<bool>,
}

/// How [`settle_locked`] treats the holder when it is the client asking.
#[derive(Clone, Copy, Debug)]
pub(super) enum Settle {
    /// Every holder is called back, the asking client too (its other
    /// threads may be growing the file).
    Everyone,
    /// Client `c` keeps its own grant (a lease or fault of its own, or its
    /// `fstat`, which it corrects with its own size).
    KeepFor(u64),
}

/// Whether a grant is out on `ino` (a cheap check before the change lock).
pub(super) fn out(sh: &Shared, ino: u64) -> bool {
    let g = sh.grants.lock();
    !g.is_empty() && g.contains_key(&ino)
}

/// [`settle_locked`] under `ino`'s change lock, for calls that only look
/// at the file (a `stat`, a seek to its end).
pub(super) fn settle(sh: &Shared, ino: u64, how: Settle) -> Result<()> {
    if !out(sh, ino) {
        return Ok(());
    }
    let lock = change_lock(sh, ino);
    let _g = lock.lock();
    settle_locked(sh, ino, how)
}

/// End the grant on `ino`, if one is out, before its size is looked at or
/// changed (the caller holds `ino`'s change lock, so no new grant comes
/// before its change): the holder stops and answers, the size its word
/// holds is committed, the blocks past it are freed.
pub(super) fn settle_locked(sh: &Shared, ino: u64, how: Settle) -> Result<()> {
    let Some(g) = sh.grants.lock().get(&ino).cloned() else {
        return Ok(());
    };
    if matches!(how, Settle::KeepFor(c) if c == g.client) {
        return Ok(());
    }
    let (cb, epoch) = {
        let mut t = sh.table.lock();
        let cb = t.clients.get(&g.client).and_then(|r| r.callback.clone());
        (cb, t.recall_epoch(ino))
    };
    let answer = cb.and_then(|cb| {
        let ch = cb.lock();
        ask(
            ch.as_fd(),
            &Reply::Settle { ino, epoch },
            ino,
            epoch,
            sh.recall_timeout,
        )
    });
    if answer.is_none() {
        tracing::warn!(
            "client {} did not answer the settle of its size grant on inode {ino}: cut off",
            g.client
        );
        drop_client(sh, g.client, "cut off: no answer to a settle");
    }
    end(sh, &g, true)
}

/// [`settle_locked`] for a change client `c` asks for after it stopped
/// using its own grant `settled` (`(word_at, serial)` of its word; `(0,
/// 0)`: none) itself, as the settle's call back would have it: if that
/// grant is the one out, it ends from its word with no call back; any
/// other (granted to another thread of `c` meanwhile, or another
/// client's) is settled as usual.
pub(super) fn settle_own(sh: &Shared, ino: u64, c: u64, settled: (u64, u32)) -> Result<()> {
    let Some(g) = sh.grants.lock().get(&ino).cloned() else {
        return Ok(());
    };
    let stopped = settled.0 != 0
        && g.client == c
        && g.grant.word_at() == settled.0
        && g.grant.line.serial == settled.1;
    if stopped {
        end(sh, &g, true)
    } else {
        settle_locked(sh, ino, Settle::Everyone)
    }
}

/// End `g`: commit the size its word holds, free the blocks past it (with
/// `trim`) and the line. Once only (a dying holder's grants end from its
/// words while a change may be settling the same one: the second waits
/// for the first).
fn end(sh: &Shared, g: &Arc<GrantOut>, trim: bool) -> Result<()> {
    end_as(sh, g, trim, true)
}

/// [`end`]; without `reuse`, the line stays out of use until the owner
/// stops (its holder may still store to it: see [`client_gone`]).
fn end_as(sh: &Shared, g: &Arc<GrantOut>, trim: bool, reuse: bool) -> Result<()> {
    let mut ended = g.ended.lock();
    if *ended {
        return Ok(());
    }
    *ended = true;
    let committed = commit(g, trim);
    if let Err(e) = &committed {
        tracing::error!(
            "size grant on inode {}: {e} (the size stays {})",
            g.grant.line.ino,
            g.file.len()
        );
    }
    // The line goes even if the commit failed: applied at a later mount,
    // it could grow a file changed since.
    let cleared = if reuse {
        sh.fs.close_grant(&g.grant)
    } else {
        sh.fs.retire_grant(&g.grant)
    };
    {
        let mut m = sh.grants.lock();
        if m.get(&g.grant.line.ino).is_some_and(|h| Arc::ptr_eq(h, g)) {
            m.remove(&g.grant.line.ino);
        }
    }
    committed.and(cleared)
}

fn commit(g: &GrantOut, trim: bool) -> Result<()> {
    let size = g.file.fs().grant_size(&g.grant)?;
    let f = &g.file;
    let len = f.len();
    if size > len {
        if !f.extend_written(len, size)? {
            return Err(Error::Corrupted {
                what: format!(
                    "size grant on inode {}: its blocks past the end are not the file's alone",
                    g.grant.line.ino
                ),
                device_offset: g.grant.word_at(),
            });
        }
        f.sync_data()?;
    }
    let from = size.max(len).div_ceil(BLOCK_SIZE) * BLOCK_SIZE;
    let to = g.grant.line.limit.div_ceil(BLOCK_SIZE) * BLOCK_SIZE;
    if trim && to > from {
        f.fallocate(falloc::PUNCH_HOLE | falloc::KEEP_SIZE, from, to - from)?;
    }
    Ok(())
}

/// `Request::Grant` of client `c` on its file `handle`: a grant over about
/// `want` bytes past the end of file.
pub(super) fn grant(sh: &Shared, c: u64, handle: u64, want: u64) -> Result<Reply> {
    let d = file_of(sh, c, handle)?;
    if !d.writable() {
        return Err(Error::BadFd);
    }
    if sh
        .table
        .lock()
        .clients
        .get(&c)
        .is_none_or(|r| r.callback.is_none())
    {
        return Err(Error::Invalid("a grant needs a callback channel (Listen)"));
    }
    let ino = d.ino();
    let lock = change_lock(sh, ino);
    let _g = lock.lock();
    let current = sh.grants.lock().get(&ino).cloned();
    // A renewal: the holder stopped using its grant before asking (the
    // protocol's rule), so its word is final; the blocks past it stay for
    // the new grant.
    let renewal = match &current {
        Some(g) if g.client == c => {
            end(sh, g, false)?;
            true
        }
        Some(_) => {
            settle_locked(sh, ino, Settle::Everyone)?;
            false
        }
        None => false,
    };
    let size = d.len();
    let from = size.div_ceil(BLOCK_SIZE);
    // Blocks a program reserved past the end (`fallocate` with KEEP_SIZE)
    // stay its own: no grant, whose end would free them.
    if !renewal
        && d.extents_shared()
            .iter()
            .any(|(e, _)| e.file_blk + e.len > from)
    {
        return Err(Error::Remote {
            errno: libc::EEXIST,
            message: "the file has blocks past its end: no size grant".into(),
        });
    }
    let want = want.clamp(GRANT_MIN_BYTES, GRANT_MAX_BYTES);
    // A renewal covers at least the old grant's blocks: they are freed
    // at its end (or here, if it fails).
    let old_limit = match &current {
        Some(g) if renewal => g.grant.line.limit,
        _ => 0,
    };
    let limit = (from * BLOCK_SIZE)
        .checked_add(want.div_ceil(BLOCK_SIZE) * BLOCK_SIZE)
        .filter(|&l| l < crate::format::v3::GRANT_MAX_SIZE)
        .ok_or(Error::FileTooBig)?
        .max(old_limit);
    let made = (|| {
        // Every other client drops its layout: its mappings past the old
        // end must fault again, and so find the grant (and settle it).
        recall(sh, ino, Some(c), false, size / BLOCK_SIZE..u64::MAX)?;
        let file = sh.fs.open_ino(ino, false, true, false)?;
        if limit > size {
            file.fallocate(falloc::KEEP_SIZE, size, limit - size)?;
        }
        let grant = file.open_grant(limit)?;
        Ok((file, grant))
    })();
    let (file, grant) = match made {
        Ok(m) => m,
        Err(e) => {
            // No blocks stay past the end (they would keep every later
            // grant off the file).
            let (a, b) = (from * BLOCK_SIZE, limit.div_ceil(BLOCK_SIZE) * BLOCK_SIZE);
            if b > a {
                let _ = d.fallocate(falloc::PUNCH_HOLE | falloc::KEEP_SIZE, a, b - a);
            }
            return Err(e);
        }
    };
    let epoch = sh.table.lock().epoch(ino);
    sh.grants.lock().insert(
        ino,
        Arc::new(GrantOut {
            client: c,
            grant,
            file,
            ended: Mutex::new(false),
        }),
    );
    Ok(Reply::Granted {
        size,
        limit,
        word_at: grant.word_at(),
        serial: grant.line.serial,
        epoch,
    })
}

/// Client `c` closed its last handle of `ino`: its grant there ends (no
/// write of it is in flight: it holds no handle to write with).
pub(super) fn closed(sh: &Shared, c: u64, ino: u64) -> Result<()> {
    if !out(sh, ino) {
        return Ok(());
    }
    let lock = change_lock(sh, ino);
    let _g = lock.lock();
    let g = sh.grants.lock().get(&ino).cloned();
    match g {
        Some(g) if g.client == c => end(sh, &g, true),
        _ => Ok(()),
    }
}

/// Client `c` is gone: its grants end from their words. Takes no change
/// lock (it runs inside changes that cut a holder off); a change settling
/// one of these waits in [`end`] until it is done. A holder that
/// `may_write` (cut off while its process lives: stopped, or too slow to
/// answer) may still copy bytes and store a size once it runs again: its
/// blocks past the end stay the file's and its line is not handed out
/// again, so neither lands in anything another file uses.
pub(super) fn client_gone(sh: &Shared, c: u64, may_write: bool) {
    let mine: Vec<Arc<GrantOut>> = sh
        .grants
        .lock()
        .values()
        .filter(|g| g.client == c)
        .cloned()
        .collect();
    for g in mine {
        let _ = end_as(sh, &g, !may_write, !may_write);
    }
}

/// The owner stops: every grant is settled (a holder still attached
/// stops growing the file first; its next growth asks the next owner).
pub(super) fn end_all(sh: &Shared) {
    let inos: Vec<u64> = sh.grants.lock().keys().copied().collect();
    for ino in inos {
        if let Err(e) = settle(sh, ino, Settle::Everyone) {
            tracing::warn!("size grant on inode {ino} at exit: {e}");
        }
    }
}
