//! Advisory file locks with the kernel's rules (`fcntl(2)` record locks,
//! open-file-description locks, `flock(2)`), kept for every process of a
//! device by its owner (docs/multiprocess.md).
//!
//! * A record lock covers a byte range `[start, end)` (`end == u64::MAX`:
//!   to end of file, however far it grows), shared (read) or exclusive
//!   (write). A POSIX lock belongs to a process (here: a client); an OFD
//!   lock to an open file description (here: a client's handle). The two
//!   kinds conflict with each other as the kernel's do; an owner never
//!   conflicts with itself, and a new lock replaces the owner's own over
//!   its range (splitting or merging its ranges).
//! * `flock` locks cover the whole file, belong to an open file
//!   description, and are a separate table: they never conflict with
//!   record locks (as on Linux).
//! * Blocking requests (`F_SETLKW`, `flock` without `LOCK_NB`) are retried
//!   by the caller while this table answers [`LockError::WouldBlock`]; a
//!   POSIX waiter is recorded, so a request that would close a cycle of
//!   POSIX owners each waiting for the next gets [`LockError::Deadlock`]
//!   (`EDEADLK`), as the kernel detects it (for POSIX locks only). A
//!   waiter that stops retrying is forgotten after [`WAIT_EXPIRY`].

use crate::sync::Mutex;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Shared or exclusive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockKind {
    Read,
    Write,
}

/// Who holds a lock: a process (POSIX record locks: `ofd` is `None`) or
/// one of its open file descriptions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LockOwner {
    pub process: u64,
    pub ofd: Option<u64>,
}

impl LockOwner {
    fn is_posix(&self) -> bool {
        self.ofd.is_none()
    }
}

/// A lock held, as `F_GETLK` reports a conflicting one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Held {
    pub start: u64,
    /// Exclusive; `u64::MAX` for "to end of file".
    pub end: u64,
    pub kind: LockKind,
    pub owner: LockOwner,
    /// The holding process's pid (`-1` for an OFD lock, as Linux reports).
    pub pid: i32,
}

/// Why a lock was not granted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LockError {
    /// Held by another owner (`EAGAIN`): a blocking caller retries.
    #[error("the range is locked by another process")]
    WouldBlock,
    /// Waiting would close a cycle of waiting processes (`EDEADLK`).
    #[error("waiting for this lock would deadlock")]
    Deadlock,
}

impl LockError {
    pub fn errno(&self) -> i32 {
        match self {
            LockError::WouldBlock => libc::EAGAIN,
            LockError::Deadlock => libc::EDEADLK,
        }
    }
}

/// How long a recorded waiter counts for deadlock detection without
/// retrying (a caller interrupted by a signal stops retrying).
pub const WAIT_EXPIRY: Duration = Duration::from_secs(2);

/// The lock tables of one file system.
#[derive(Debug, Default)]
pub struct LockTable {
    st: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Record locks per inode, sorted by start, each owner's disjoint.
    records: HashMap<u64, Vec<Held>>,
    /// flock locks per inode: (open file description, kind).
    flocks: HashMap<u64, Vec<(LockOwner, LockKind)>>,
    /// POSIX owners waiting: for whom, since when.
    waits: HashMap<LockOwner, (LockOwner, Instant)>,
}

fn overlaps(h: &Held, start: u64, end: u64) -> bool {
    h.start < end && start < h.end
}

fn conflicts(a: LockKind, b: LockKind) -> bool {
    a == LockKind::Write || b == LockKind::Write
}

impl LockTable {
    pub fn new() -> LockTable {
        LockTable::default()
    }

    /// `F_GETLK`: the first lock of another owner that a `kind` lock of
    /// `[start, end)` would conflict with.
    pub fn get(
        &self,
        ino: u64,
        owner: LockOwner,
        kind: LockKind,
        start: u64,
        end: u64,
    ) -> Option<Held> {
        let st = self.st.lock();
        st.conflict(ino, owner, kind, start, end)
    }

    /// `F_SETLK`: lock (`Some(kind)`) or unlock (`None`) the byte `range`
    /// for `owner` (whose process has `pid`). With `wait` (`F_SETLKW`) a
    /// conflict records the waiter for deadlock detection; the caller
    /// retries until granted.
    pub fn set(
        &self,
        ino: u64,
        owner: LockOwner,
        pid: i32,
        kind: Option<LockKind>,
        range: std::ops::Range<u64>,
        wait: bool,
    ) -> Result<(), LockError> {
        let (start, end) = (range.start, range.end);
        if start >= end {
            return Ok(());
        }
        let mut st = self.st.lock();
        let Some(kind) = kind else {
            st.carve(ino, owner, start, end);
            return Ok(());
        };
        if let Some(h) = st.conflict(ino, owner, kind, start, end) {
            if wait && owner.is_posix() && h.owner.is_posix() {
                if st.would_deadlock(owner, h.owner) {
                    st.waits.remove(&owner);
                    return Err(LockError::Deadlock);
                }
                st.waits.insert(owner, (h.owner, Instant::now()));
            }
            return Err(LockError::WouldBlock);
        }
        st.waits.remove(&owner);
        st.carve(ino, owner, start, end);
        let v = st.records.entry(ino).or_default();
        v.push(Held {
            start,
            end,
            kind,
            owner,
            pid: if owner.is_posix() { pid } else { -1 },
        });
        merge(v, owner);
        Ok(())
    }

    /// `flock`: take (`Some(kind)`) or drop (`None`) the whole-file lock of
    /// open file description `ofd`. A conversion drops the old lock first,
    /// as Linux does (it is not atomic).
    pub fn flock(&self, ino: u64, ofd: LockOwner, kind: Option<LockKind>) -> Result<(), LockError> {
        let mut st = self.st.lock();
        let v = st.flocks.entry(ino).or_default();
        v.retain(|(o, _)| *o != ofd);
        if let Some(kind) = kind {
            if v.iter().any(|&(_, k)| conflicts(k, kind)) {
                return Err(LockError::WouldBlock);
            }
            v.push((ofd, kind));
        }
        if v.is_empty() {
            st.flocks.remove(&ino);
        }
        Ok(())
    }

    /// Drop every lock `owner` holds on `ino` (a POSIX owner: the process
    /// closed a descriptor of the file; an OFD: its last descriptor closed).
    pub fn release(&self, ino: u64, owner: LockOwner) {
        self.st.lock().release(ino, owner);
    }

    /// Drop every lock and wait of process `process` (it died or
    /// disconnected), its open file descriptions' included.
    pub fn release_process(&self, process: u64) {
        self.st.lock().release_process(process);
    }

    /// Process `process` is gone, and `last` are the open file descriptions
    /// (inode, owner) whose last handles it held: drop all their locks in
    /// one step, so that no one sees its record locks gone while its flock
    /// or OFD locks stay (as after the kernel's exit, where all are gone
    /// once the parent's `wait` returns).
    pub fn release_gone(&self, process: u64, last: &[(u64, LockOwner)]) {
        let mut st = self.st.lock();
        st.release_process(process);
        for &(ino, owner) in last {
            st.release(ino, owner);
        }
    }

    /// Give the POSIX record locks of process `from` on `only` these inodes
    /// (every inode with `None`) to process `to` (an exec: the same process goes on
    /// under another connection). Its recorded waits end (the exec
    /// interrupted them).
    pub fn move_process(&self, from: u64, to: u64, only: Option<&[u64]>) {
        let mut st = self.st.lock();
        for (ino, v) in st.records.iter_mut() {
            if only.is_some_and(|i| !i.contains(ino)) {
                continue;
            }
            for h in v
                .iter_mut()
                .filter(|h| h.owner.process == from && h.owner.ofd.is_none())
            {
                h.owner.process = to;
            }
        }
        st.waits
            .retain(|w, (b, _)| w.process != from && b.process != from);
    }

    /// Every record lock on `ino` (for tests and `udax stat`).
    pub fn records(&self, ino: u64) -> Vec<Held> {
        self.st
            .lock()
            .records
            .get(&ino)
            .cloned()
            .unwrap_or_default()
    }
}

impl State {
    fn release(&mut self, ino: u64, owner: LockOwner) {
        self.carve(ino, owner, 0, u64::MAX);
        if let Some(v) = self.flocks.get_mut(&ino) {
            v.retain(|(o, _)| *o != owner);
            if v.is_empty() {
                self.flocks.remove(&ino);
            }
        }
    }

    fn release_process(&mut self, process: u64) {
        for v in self.records.values_mut() {
            v.retain(|h| h.owner.process != process);
        }
        self.records.retain(|_, v| !v.is_empty());
        for v in self.flocks.values_mut() {
            v.retain(|(o, _)| o.process != process);
        }
        self.flocks.retain(|_, v| !v.is_empty());
        self.waits
            .retain(|w, (b, _)| w.process != process && b.process != process);
    }

    fn conflict(
        &self,
        ino: u64,
        owner: LockOwner,
        kind: LockKind,
        start: u64,
        end: u64,
    ) -> Option<Held> {
        self.records
            .get(&ino)?
            .iter()
            .find(|h| h.owner != owner && overlaps(h, start, end) && conflicts(h.kind, kind))
            .copied()
    }

    /// Would `owner` waiting for `blocker` close a cycle? Follows the
    /// recorded waits from `blocker` (each POSIX owner waits for at most
    /// one lock at a time); expired waits do not count.
    fn would_deadlock(&self, owner: LockOwner, blocker: LockOwner) -> bool {
        let mut cur = blocker;
        for _ in 0..=self.waits.len() {
            if cur == owner {
                return true;
            }
            match self.waits.get(&cur) {
                Some(&(next, since)) if since.elapsed() < WAIT_EXPIRY => cur = next,
                _ => return false,
            }
        }
        false
    }

    /// Remove `owner`'s locks from `[start, end)` of `ino`, keeping the
    /// parts outside it.
    fn carve(&mut self, ino: u64, owner: LockOwner, start: u64, end: u64) {
        let Some(v) = self.records.get_mut(&ino) else {
            return;
        };
        let mut out = Vec::with_capacity(v.len() + 1);
        for h in v.drain(..) {
            if h.owner != owner || !overlaps(&h, start, end) {
                out.push(h);
                continue;
            }
            if h.start < start {
                out.push(Held { end: start, ..h });
            }
            if h.end > end {
                out.push(Held { start: end, ..h });
            }
        }
        if out.is_empty() {
            self.records.remove(&ino);
        } else {
            out.sort_by_key(|h| h.start);
            *v = out;
        }
    }
}

/// Merge `owner`'s adjacent or overlapping ranges of the same kind, and
/// keep the list sorted by start.
fn merge(v: &mut Vec<Held>, owner: LockOwner) {
    v.sort_by_key(|h| h.start);
    let mut out: Vec<Held> = Vec::with_capacity(v.len());
    for h in v.drain(..) {
        if h.owner == owner {
            if let Some(p) = out
                .iter_mut()
                .rev()
                .find(|p| p.owner == owner && p.kind == h.kind && p.end >= h.start)
            {
                p.end = p.end.max(h.end);
                continue;
            }
        }
        out.push(h);
    }
    *v = out;
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn posix(p: u64) -> LockOwner {
        LockOwner {
            process: p,
            ofd: None,
        }
    }
    fn ofd(p: u64, h: u64) -> LockOwner {
        LockOwner {
            process: p,
            ofd: Some(h),
        }
    }
    use LockKind::{Read, Write};

    #[test]
    fn p_readers_share_a_writer_is_refused_and_f_getlk_names_the_holder() {
        let t = LockTable::new();
        t.set(1, posix(1), 100, Some(Read), 0..10, false).unwrap();
        t.set(1, posix(2), 200, Some(Read), 5..20, false).unwrap();
        assert_eq!(
            t.set(1, posix(3), 300, Some(Write), 8..9, false),
            Err(LockError::WouldBlock)
        );
        let h = t.get(1, posix(3), Write, 0, u64::MAX).unwrap();
        assert_eq!((h.pid, h.start, h.end, h.kind), (100, 0, 10, Read));
        assert_eq!(t.get(1, posix(3), Read, 0, u64::MAX), None);
        // Another file is independent.
        t.set(2, posix(3), 300, Some(Write), 0..u64::MAX, false)
            .unwrap();
    }

    #[test]
    fn p_a_lock_replaces_the_owners_own_and_unlock_splits() {
        let t = LockTable::new();
        t.set(1, posix(1), 1, Some(Read), 0..100, false).unwrap();
        // Upgrading part of one's own range never conflicts with oneself.
        t.set(1, posix(1), 1, Some(Write), 40..60, false).unwrap();
        let r: Vec<_> = t
            .records(1)
            .iter()
            .map(|h| (h.start, h.end, h.kind))
            .collect();
        assert_eq!(r, [(0, 40, Read), (40, 60, Write), (60, 100, Read)]);
        t.set(1, posix(1), 1, None, 10..50, false).unwrap();
        let r: Vec<_> = t
            .records(1)
            .iter()
            .map(|h| (h.start, h.end, h.kind))
            .collect();
        assert_eq!(r, [(0, 10, Read), (50, 60, Write), (60, 100, Read)]);
        // Adjacent same-kind ranges merge.
        t.set(1, posix(1), 1, Some(Read), 10..50, false).unwrap();
        t.set(1, posix(1), 1, Some(Read), 50..60, false).unwrap();
        let r: Vec<_> = t.records(1).iter().map(|h| (h.start, h.end)).collect();
        assert_eq!(r, [(0, 100)]);
    }

    #[test]
    fn p_ofd_and_posix_locks_conflict_flock_is_separate() {
        let t = LockTable::new();
        t.set(1, ofd(1, 7), 1, Some(Write), 0..u64::MAX, false)
            .unwrap();
        // The same process's POSIX lock conflicts with its own OFD lock.
        assert_eq!(
            t.set(1, posix(1), 1, Some(Read), 0..1, false),
            Err(LockError::WouldBlock)
        );
        assert_eq!(t.get(1, posix(1), Read, 0, 1).unwrap().pid, -1);
        // flock does not see record locks.
        t.flock(1, ofd(2, 1), Some(Write)).unwrap();
        assert_eq!(
            t.flock(1, ofd(3, 1), Some(Read)),
            Err(LockError::WouldBlock)
        );
        t.release(1, ofd(2, 1));
        t.flock(1, ofd(3, 1), Some(Read)).unwrap();
        t.flock(1, ofd(4, 1), Some(Read)).unwrap();
    }

    #[test]
    fn p_a_gone_process_loses_its_record_locks_and_its_last_descriptions_flock_and_ofd_locks() {
        let t = LockTable::new();
        t.set(1, posix(1), 1, Some(Write), 0..10, false).unwrap();
        t.flock(1, ofd(0, 7), Some(Write)).unwrap();
        t.set(2, ofd(0, 8), 1, Some(Write), 0..u64::MAX, false)
            .unwrap();
        // A description another process still holds keeps its lock.
        t.flock(3, ofd(0, 9), Some(Write)).unwrap();
        t.release_gone(1, &[(1, ofd(0, 7)), (2, ofd(0, 8))]);
        assert_eq!(t.get(1, posix(2), Write, 0, u64::MAX), None);
        assert_eq!(t.get(2, posix(2), Write, 0, u64::MAX), None);
        t.flock(1, ofd(0, 10), Some(Write)).unwrap();
        assert_eq!(
            t.flock(3, ofd(0, 11), Some(Read)),
            Err(LockError::WouldBlock)
        );
    }

    #[test]
    fn p_a_cycle_of_waiting_processes_gets_edeadlk() {
        let t = LockTable::new();
        t.set(1, posix(1), 1, Some(Write), 0..10, false).unwrap();
        t.set(1, posix(2), 2, Some(Write), 10..20, false).unwrap();
        // 1 waits for 2 (recorded), then 2 asking for 1's range would close
        // the cycle.
        assert_eq!(
            t.set(1, posix(1), 1, Some(Write), 10..20, true),
            Err(LockError::WouldBlock)
        );
        assert_eq!(
            t.set(1, posix(2), 2, Some(Write), 0..10, true),
            Err(LockError::Deadlock)
        );
        // Three processes across two files.
        t.set(2, posix(3), 3, Some(Write), 0..1, false).unwrap();
        assert_eq!(
            t.set(2, posix(2), 2, Some(Write), 0..1, true),
            Err(LockError::WouldBlock)
        );
        // 3 -> 1 -> 2 -> 3.
        assert_eq!(
            t.set(1, posix(3), 3, Some(Read), 5..6, true),
            Err(LockError::Deadlock)
        );
        // Process 2 dies: its locks and waits go; 1 gets its lock.
        t.release_process(2);
        t.set(1, posix(1), 1, Some(Write), 10..20, true).unwrap();
    }

    /// The table against a byte-by-byte model: for every sequence of
    /// locks, unlocks and releases by three owners over 32 bytes, each
    /// request is granted exactly when no other owner holds a conflicting
    /// byte, and afterwards each byte is held as the model says.
    #[derive(Clone, Debug)]
    enum Op {
        Set(u64, Option<LockKind>, u64, u64),
        Release(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (
                0..3u64,
                prop_oneof![Just(None), Just(Some(Read)), Just(Some(Write))],
                0..32u64,
                1..33u64
            )
                .prop_map(|(o, k, a, n)| Op::Set(o, k, a, (a + n).min(32))),
            (0..3u64).prop_map(Op::Release),
        ]
    }

    proptest! {
        #[test]
        fn p_record_locks_agree_with_a_byte_model(ops in proptest::collection::vec(op(), 1..60)) {
            let t = LockTable::new();
            // model[byte][owner] = kind held
            let mut model = vec![[None::<LockKind>; 3]; 32];
            for o in ops {
                match o {
                    Op::Set(w, kind, a, b) => {
                        let free = (a..b).all(|i| (0..3).all(|x| {
                            x == w as usize || match (model[i as usize][x], kind) {
                                (Some(h), Some(k)) => h == Read && k == Read,
                                _ => true,
                            }
                        }));
                        let r = t.set(1, posix(w), w as i32, kind, a..b, false);
                        prop_assert_eq!(r.is_ok(), free || kind.is_none());
                        if r.is_ok() {
                            for i in a..b {
                                model[i as usize][w as usize] = kind;
                            }
                        }
                    }
                    Op::Release(w) => {
                        t.release(1, posix(w));
                        for m in model.iter_mut() {
                            m[w as usize] = None;
                        }
                    }
                }
                let mut seen = vec![[None::<LockKind>; 3]; 32];
                for h in t.records(1) {
                    for i in h.start..h.end.min(32) {
                        let s = &mut seen[i as usize][h.owner.process as usize];
                        prop_assert!(s.is_none(), "owner ranges overlap");
                        *s = Some(h.kind);
                    }
                }
                prop_assert_eq!(&seen, &model);
            }
        }
    }
}
