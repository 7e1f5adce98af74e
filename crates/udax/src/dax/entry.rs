//! DAX entries and entry locks (SPEC M10), after `fs/dax.c`.
//!
//! Each file has an index of entries keyed by page index. An entry is one word:
//! flag bits (locked, 2 MiB, zero page, empty) and the device block it maps.
//! A 2 MiB ("PMD") entry sits at the 2 MiB-aligned index and covers 512 pages;
//! while it exists no 4 KiB entry may exist inside its range, and a 4 KiB entry
//! inside a range stops a 2 MiB entry from being made there ("favour PTE").
//!
//! The entry lock is a bit in the word, taken and released under the index's
//! mutex. A thread that finds an entry locked sleeps on one of a fixed table of
//! wait queues, chosen by hashing (file, 2 MiB-aligned index). It registers as a
//! waiter *before* it drops the index mutex, and the unlocker marks waiters
//! under that mutex, so a wake-up cannot be lost. A plain unlock wakes one waiter
//! of the same entry; removing an entry or changing its kind wakes all of them.
//! Waiters carry their exact key, so a wake never goes to a waiter of another
//! entry that merely shares the queue (the kernel compares keys the same way).
//!
//! Lock order: index mutex -> wait-queue mutex. No other lock is taken inside.

use crate::sync::{Condvar, Mutex, MutexGuard};
use std::collections::BTreeMap;

/// Pages per 2 MiB entry.
pub const PMD_PAGES: u64 = 512;

/// One entry word.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Entry(u64);

impl Entry {
    const LOCKED: u64 = 1;
    const PMD: u64 = 2;
    const ZERO: u64 = 4;
    const EMPTY: u64 = 8;
    const SHIFT: u32 = 4;

    /// A placeholder for a fault in progress (always created locked).
    pub fn empty(pmd: bool) -> Entry {
        Entry(Self::EMPTY | if pmd { Self::PMD } else { 0 })
    }
    /// The zero page is mapped for this range (no block behind it).
    pub fn zero(pmd: bool) -> Entry {
        Entry(Self::ZERO | if pmd { Self::PMD } else { 0 })
    }
    /// Device block `dev_blk` (the first of 512 for a 2 MiB entry) is mapped.
    pub fn block(dev_blk: u64, pmd: bool) -> Entry {
        Entry((dev_blk << Self::SHIFT) | if pmd { Self::PMD } else { 0 })
    }
    pub fn is_locked(self) -> bool {
        self.0 & Self::LOCKED != 0
    }
    pub fn is_pmd(self) -> bool {
        self.0 & Self::PMD != 0
    }
    pub fn is_zero(self) -> bool {
        self.0 & Self::ZERO != 0
    }
    pub fn is_empty(self) -> bool {
        self.0 & Self::EMPTY != 0
    }
    /// The device block, for block entries.
    pub fn dev_blk(self) -> Option<u64> {
        (!self.is_zero() && !self.is_empty()).then_some(self.0 >> Self::SHIFT)
    }
    pub fn pages(self) -> u64 {
        if self.is_pmd() {
            PMD_PAGES
        } else {
            1
        }
    }
    fn locked(self) -> Entry {
        Entry(self.0 | Self::LOCKED)
    }
    fn unlocked(self) -> Entry {
        Entry(self.0 & !Self::LOCKED)
    }
    fn kind(self) -> u64 {
        self.0 & (Self::PMD | Self::ZERO | Self::EMPTY)
    }
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = if self.is_empty() {
            "empty".to_string()
        } else if self.is_zero() {
            "zero".to_string()
        } else {
            format!("blk {}", self.0 >> Self::SHIFT)
        };
        write!(
            f,
            "{}{}{}",
            kind,
            if self.is_pmd() { " 2M" } else { "" },
            if self.is_locked() { " locked" } else { "" }
        )
    }
}

#[derive(Debug)]
struct Waiter {
    file: u64,
    index: u64,
    ticket: u64,
    woken: bool,
}

#[derive(Debug, Default)]
struct Queue {
    waiters: Vec<Waiter>,
    next_ticket: u64,
}

#[derive(Debug, Default)]
struct Slot {
    q: Mutex<Queue>,
    cv: Condvar,
}

/// The fixed table of hashed wait queues, shared by every file of a file system.
#[derive(Debug)]
pub struct WaitTable {
    slots: Vec<Slot>,
}

impl WaitTable {
    pub fn new(n: usize) -> WaitTable {
        WaitTable {
            slots: (0..n.max(1)).map(|_| Slot::default()).collect(),
        }
    }

    fn slot(&self, file: u64, index: u64) -> &Slot {
        let k = file
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(index / PMD_PAGES)
            .wrapping_mul(0xBF58_476D_1CE4_E5B9);
        &self.slots[(k >> 32) as usize % self.slots.len()]
    }

    /// Mark waiters of (file, index) woken: the first one, or all. Called with
    /// the index mutex held.
    fn wake(&self, file: u64, index: u64, all: bool) {
        let slot = self.slot(file, index);
        let mut q = slot.q.lock();
        let mut any = false;
        for w in q.waiters.iter_mut() {
            if w.file == file && w.index == index && !w.woken {
                w.woken = true;
                any = true;
                if !all {
                    break;
                }
            }
        }
        drop(q);
        if any {
            slot.cv.notify_all();
        }
    }
}

/// Why [`EntryIndex::lock`] gave no lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Conflict {
    /// A 2 MiB entry was asked for where 4 KiB entries exist: fall back to 4 KiB.
    Fallback,
}

/// An entry locked by the caller: `index` is where the entry lives (the
/// 2 MiB-aligned index for a 2 MiB entry), `entry` what it held when locked.
///
/// A guard: [`Locked::unlock`] stores a new entry, [`Locked::remove`]
/// deletes it, and dropping it any other way (an early return, `?`, a panic)
/// puts it back as it was: an entry that was empty (created by this lock) is
/// deleted, any other unlocked unchanged. Waiters are woken in every case, so
/// no path can leave an entry locked and its waiters asleep.
#[derive(Debug)]
#[must_use = "a locked entry is unlocked with a new value, removed, or dropped (restored)"]
pub struct Locked<'a> {
    ix: &'a EntryIndex,
    table: &'a WaitTable,
    pub index: u64,
    pub entry: Entry,
}

impl<'a> Locked<'a> {
    /// Store `new` and unlock: wake one waiter, or all if the entry changed kind.
    pub fn unlock(self, new: Entry) {
        let l = std::mem::ManuallyDrop::new(self);
        debug_assert_eq!(new.is_pmd(), l.entry.is_pmd(), "unlock cannot change size");
        l.ix.store_unlocked(l.table, l.index, new);
    }

    /// Unlock the entry unchanged (waking one waiter).
    pub fn keep(self) {
        let e = self.entry;
        self.unlock(e);
    }

    /// Delete the entry and wake all its waiters.
    pub fn remove(self) {
        let l = std::mem::ManuallyDrop::new(self);
        l.ix.delete(l.table, l.index);
    }

    /// Replace a locked 2 MiB entry by a locked empty 4 KiB entry at `idx` (the
    /// caller has unmapped what the 2 MiB entry stood for). Wakes all waiters.
    pub fn downgrade(self, idx: u64) -> Locked<'a> {
        debug_assert!(self.entry.is_pmd());
        let l = std::mem::ManuallyDrop::new(self);
        let mut m = l.ix.map.lock();
        m.remove(&l.index);
        l.table.wake(l.ix.file, l.index, true);
        let e = Entry::empty(false);
        m.insert(idx, e.locked());
        Locked {
            ix: l.ix,
            table: l.table,
            index: idx,
            entry: e,
        }
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        if self.entry.is_empty() {
            self.ix.delete(self.table, self.index);
        } else {
            self.ix.store_unlocked(self.table, self.index, self.entry);
        }
    }
}

/// The entries of one file.
#[derive(Debug)]
pub struct EntryIndex {
    file: u64,
    map: Mutex<BTreeMap<u64, Entry>>,
}

impl EntryIndex {
    pub fn new(file: u64) -> EntryIndex {
        EntryIndex {
            file,
            map: Mutex::new(BTreeMap::new()),
        }
    }

    /// The entry covering page `idx` and where it lives.
    fn find(m: &BTreeMap<u64, Entry>, idx: u64) -> Option<(u64, Entry)> {
        let c = idx - idx % PMD_PAGES;
        match m.get(&c) {
            Some(e) if e.is_pmd() => Some((c, *e)),
            _ => m.get(&idx).map(|e| (idx, *e)),
        }
    }

    fn any_in(m: &BTreeMap<u64, Entry>, a: u64, b: u64) -> bool {
        m.range(a..b).next().is_some()
    }

    /// Sleep until woken for (file, at). Registers before releasing `m`.
    fn wait(&self, table: &WaitTable, m: MutexGuard<'_, BTreeMap<u64, Entry>>, at: u64) {
        let slot = table.slot(self.file, at);
        let mut q = slot.q.lock();
        let ticket = q.next_ticket;
        q.next_ticket += 1;
        q.waiters.push(Waiter {
            file: self.file,
            index: at,
            ticket,
            woken: false,
        });
        drop(m);
        loop {
            let pos = q.waiters.iter().position(|w| w.ticket == ticket);
            match pos {
                Some(p) if q.waiters[p].woken => {
                    q.waiters.swap_remove(p);
                    return;
                }
                Some(_) => slot.cv.wait(&mut q),
                None => return,
            }
        }
    }

    /// Lock the entry covering page `idx`, creating a locked empty one (2 MiB if
    /// `pmd`) when there is none. Sleeps while another thread holds it.
    pub fn lock<'a>(
        &'a self,
        table: &'a WaitTable,
        idx: u64,
        pmd: bool,
    ) -> Result<Locked<'a>, Conflict> {
        loop {
            let mut m = self.map.lock();
            match Self::find(&m, idx) {
                Some((at, e)) if e.is_locked() => self.wait(table, m, at),
                Some((at, e)) => {
                    if pmd && !e.is_pmd() {
                        return Err(Conflict::Fallback);
                    }
                    m.insert(at, e.locked());
                    return Ok(Locked {
                        ix: self,
                        table,
                        index: at,
                        entry: e,
                    });
                }
                None => {
                    let c = idx - idx % PMD_PAGES;
                    if pmd && Self::any_in(&m, c, c + PMD_PAGES) {
                        return Err(Conflict::Fallback);
                    }
                    let at = if pmd { c } else { idx };
                    let e = Entry::empty(pmd);
                    m.insert(at, e.locked());
                    return Ok(Locked {
                        ix: self,
                        table,
                        index: at,
                        entry: e,
                    });
                }
            }
        }
    }

    /// Lock the entry living exactly at `at`, if there is one (waiting for it).
    pub fn lock_at<'a>(&'a self, table: &'a WaitTable, at: u64) -> Option<Locked<'a>> {
        loop {
            let mut m = self.map.lock();
            match m.get(&at).copied() {
                None => return None,
                Some(e) if e.is_locked() => self.wait(table, m, at),
                Some(e) => {
                    m.insert(at, e.locked());
                    return Some(Locked {
                        ix: self,
                        table,
                        index: at,
                        entry: e,
                    });
                }
            }
        }
    }

    /// Store `new` in the locked entry at `at` and unlock it: wake one
    /// waiter, or all if the entry changed kind.
    fn store_unlocked(&self, table: &WaitTable, at: u64, new: Entry) {
        let mut m = self.map.lock();
        let old = m.get(&at).copied();
        debug_assert!(
            old.is_some_and(|e| e.is_locked()),
            "unlock of unlocked entry"
        );
        m.insert(at, new.unlocked());
        let all = old.is_none_or(|o| o.kind() != new.kind());
        table.wake(self.file, at, all);
    }

    /// Delete the locked entry at `at` and wake all its waiters.
    fn delete(&self, table: &WaitTable, at: u64) {
        let mut m = self.map.lock();
        m.remove(&at);
        table.wake(self.file, at, true);
    }

    /// Create a locked empty 4 KiB entry at `idx` if nothing covers it (never
    /// waits: fault-around only takes what is free).
    pub fn lock_vacant<'a>(&'a self, table: &'a WaitTable, idx: u64) -> Option<Locked<'a>> {
        let mut m = self.map.lock();
        if Self::find(&m, idx).is_some() {
            return None;
        }
        let e = Entry::empty(false);
        m.insert(idx, e.locked());
        Some(Locked {
            ix: self,
            table,
            index: idx,
            entry: e,
        })
    }

    /// Insert unlocked 4 KiB block entries for pages `pages`, page `p` on
    /// device block `dev_blk + (p - pages.start)`, where nothing covers them
    /// (fault-around): one lock and one tree walk a page. Pages that all
    /// have an entry of their own already (a range mapped before, the
    /// common case of a program that maps the same ranges again and again)
    /// cost one walk along the tree's leaves instead.
    pub fn insert_run_if_vacant(&self, pages: std::ops::Range<u64>, dev_blk: u64) {
        let mut m = self.map.lock();
        if m.range(pages.clone()).count() as u64 == pages.end.saturating_sub(pages.start) {
            return;
        }
        let mut p = pages.start;
        while p < pages.end {
            let c = p - p % PMD_PAGES;
            let chunk_end = (c + PMD_PAGES).min(pages.end);
            if m.get(&c).is_some_and(|e| e.is_pmd()) {
                p = chunk_end;
                continue;
            }
            while p < chunk_end {
                m.entry(p)
                    .or_insert_with(|| Entry::block(dev_blk + (p - pages.start), false).unlocked());
                p += 1;
            }
        }
    }

    /// Entries living in `[a, b)` plus a 2 MiB entry covering `a`.
    pub fn keys_in(&self, a: u64, b: u64) -> Vec<u64> {
        let m = self.map.lock();
        let mut v = Vec::new();
        let c = a - a % PMD_PAGES;
        if c < a && m.get(&c).is_some_and(|e| e.is_pmd()) {
            v.push(c);
        }
        v.extend(m.range(a..b).map(|(k, _)| *k));
        v
    }

    #[cfg(test)]
    pub fn get(&self, idx: u64) -> Option<(u64, Entry)> {
        Self::find(&self.map.lock(), idx)
    }

    pub fn len(&self) -> usize {
        self.map.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    #[test]
    fn entry_word_encodes_kind_size_and_block() {
        let e = Entry::block(12345, true);
        assert_eq!(e.dev_blk(), Some(12345));
        assert!(e.is_pmd() && !e.is_zero() && !e.is_empty() && !e.is_locked());
        assert_eq!(Entry::zero(false).dev_blk(), None);
        assert_eq!(Entry::empty(true).pages(), 512);
    }

    /// A locked region left by `?` (or a panic) puts the entry back and wakes
    /// its waiters: an entry it created goes, an entry it found stays as found.
    #[test]
    fn an_early_return_restores_the_entry_and_wakes_the_waiter() {
        let t = Arc::new(WaitTable::new(8));
        let ix = Arc::new(EntryIndex::new(1));
        let l = ix.lock(&t, 5, false).unwrap();
        l.unlock(Entry::block(40, false));
        fn fails_inside(ix: &EntryIndex, t: &WaitTable, idx: u64) -> Result<(), &'static str> {
            let _l = ix.lock(t, idx, false).unwrap();
            Err("failed while locked")?;
            unreachable!("the `?` returned")
        }
        for idx in [5u64, 6] {
            let held = ix.lock(&t, idx, false).unwrap();
            let (t2, ix2) = (t.clone(), ix.clone());
            let waiter = std::thread::spawn(move || {
                let l = ix2.lock(&t2, idx, false).unwrap();
                l.entry // dropped: put back as found
            });
            std::thread::sleep(std::time::Duration::from_millis(20));
            drop(held); // the waiter is asleep on it, or soon will be
            assert!(fails_inside(&ix, &t, idx).is_err());
            let seen = waiter.join().unwrap();
            if idx == 5 {
                assert_eq!(seen, Entry::block(40, false));
                assert_eq!(ix.get(5), Some((5, Entry::block(40, false))));
            } else {
                assert!(seen.is_empty());
            }
        }
        assert_eq!(ix.get(6), None, "a created entry left by an error is gone");
        assert_eq!(ix.len(), 1);
    }

    #[test]
    fn pmd_lock_falls_back_when_a_pte_entry_is_inside() {
        let t = WaitTable::new(8);
        let ix = EntryIndex::new(1);
        let l = ix.lock(&t, 700, false).unwrap();
        l.unlock(Entry::zero(false));
        assert!(matches!(ix.lock(&t, 600, true), Err(Conflict::Fallback)));
        // A PMD entry elsewhere is fine and covers its whole range.
        let l = ix.lock(&t, 1100, true).unwrap();
        assert_eq!(l.index, 1024);
        l.unlock(Entry::zero(true));
        assert_eq!(ix.get(1535).map(|(at, _)| at), Some(1024));
        // Fault-around adds no 4 KiB entry inside it, but after it.
        ix.insert_run_if_vacant(1530..1540, 77);
        assert_eq!(ix.get(1535).map(|(at, _)| at), Some(1024));
        assert_eq!(ix.get(1536), Some((1536, Entry::block(83, false))));
        assert_eq!(ix.get(1539), Some((1539, Entry::block(86, false))));
        // A 4 KiB lock inside a 2 MiB entry locks the 2 MiB entry.
        let l = ix.lock(&t, 1030, false).unwrap();
        assert_eq!(l.index, 1024);
        let l = l.downgrade(1030);
        l.unlock(Entry::block(9, false));
        assert_eq!(ix.get(1024), None);
        assert_eq!(ix.get(1030).unwrap().1, Entry::block(9, false));
    }

    #[test]
    fn fault_around_over_pages_that_all_have_entries_keeps_them_and_fills_a_gap_later() {
        let t = WaitTable::new(8);
        let ix = EntryIndex::new(2);
        ix.insert_run_if_vacant(10..14, 100);
        let l = ix.lock(&t, 12, false).unwrap();
        l.unlock(Entry::zero(false));
        // Every page has an entry: nothing changes (the zero entry stays).
        ix.insert_run_if_vacant(10..14, 500);
        assert_eq!(ix.get(10), Some((10, Entry::block(100, false))));
        assert_eq!(ix.get(12), Some((12, Entry::zero(false))));
        assert_eq!(ix.len(), 4);
        // One page more than has entries: only that one is added.
        ix.insert_run_if_vacant(10..15, 500);
        assert_eq!(ix.get(13), Some((13, Entry::block(103, false))));
        assert_eq!(ix.get(14), Some((14, Entry::block(504, false))));
        assert_eq!(ix.len(), 5);
    }

    /// Many threads fault the same page; exactly one "allocates" (finds the entry
    /// empty), every other finds the block; nobody is left sleeping.
    #[test]
    fn entry_lock_stress_no_double_allocation_no_lost_wakeup() {
        let t = Arc::new(WaitTable::new(4));
        let ix = Arc::new(EntryIndex::new(7));
        let allocs = Arc::new(AtomicU64::new(0));
        for round in 0..200u64 {
            let hs: Vec<_> = (0..6)
                .map(|i| {
                    let (t, ix, allocs) = (t.clone(), ix.clone(), allocs.clone());
                    std::thread::spawn(move || {
                        let idx = round * 3 + (i % 2) * 512 * 8;
                        let l = ix.lock(&t, idx, false).unwrap();
                        if l.entry.is_empty() {
                            allocs.fetch_add(1, Ordering::Relaxed);
                            std::thread::yield_now();
                            l.unlock(Entry::block(idx + 100, false));
                        } else {
                            assert_eq!(l.entry.dev_blk(), Some(idx + 100));
                            l.keep();
                        }
                    })
                })
                .collect();
            for h in hs {
                h.join().unwrap();
            }
        }
        assert_eq!(allocs.load(Ordering::Relaxed), 400);
    }
}

/// Model checks: run with `RUSTFLAGS="--cfg loom" cargo test --release -p udax --lib loom_`.
#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use crate::sync::{thread, Arc, AtomicU64, Ordering};

    fn fault(t: &WaitTable, ix: &EntryIndex, allocs: &AtomicU64, idx: u64) {
        let l = ix.lock(t, idx, false).unwrap();
        if l.entry.is_empty() {
            allocs.fetch_add(1, Ordering::SeqCst);
            l.unlock(Entry::block(42, false));
        } else {
            l.keep();
        }
    }

    /// Two faults on one page: one allocation, no lost wake-up (loom reports a
    /// deadlock if a sleeper is never woken).
    #[test]
    fn loom_entry_lock_two_faults_allocate_once() {
        loom::model(|| {
            let t = Arc::new(WaitTable::new(2));
            let ix = Arc::new(EntryIndex::new(1));
            let allocs = Arc::new(AtomicU64::new(0));
            let hs: Vec<_> = (0..2)
                .map(|_| {
                    let (t, ix, a) = (t.clone(), ix.clone(), allocs.clone());
                    thread::spawn(move || fault(&t, &ix, &a, 5))
                })
                .collect();
            fault(&t, &ix, &allocs, 5);
            for h in hs {
                h.join().unwrap();
            }
            assert_eq!(allocs.load(Ordering::SeqCst), 1);
            assert_eq!(ix.get(5).unwrap().1, Entry::block(42, false));
        });
    }

    /// A fault racing with a truncate that removes the entry: no deadlock, and
    /// afterwards the entry is either gone or a block (never left locked).
    #[test]
    fn loom_entry_lock_fault_vs_truncate() {
        loom::model(|| {
            let t = Arc::new(WaitTable::new(1));
            let ix = Arc::new(EntryIndex::new(1));
            let allocs = Arc::new(AtomicU64::new(0));
            let (t2, ix2, a2) = (t.clone(), ix.clone(), allocs.clone());
            let f = thread::spawn(move || fault(&t2, &ix2, &a2, 3));
            let (t3, ix3) = (t.clone(), ix.clone());
            let tr = thread::spawn(move || {
                for k in ix3.keys_in(0, 8) {
                    if let Some(l) = ix3.lock_at(&t3, k) {
                        l.remove();
                    }
                }
            });
            // A second fault on another page sharing the wait queue.
            fault(&t, &ix, &allocs, 4);
            f.join().unwrap();
            tr.join().unwrap();
            for k in [3u64, 4] {
                if let Some((_, e)) = ix.get(k) {
                    assert!(!e.is_locked());
                    assert_eq!(e.dev_blk(), Some(42));
                }
            }
        });
    }

    /// A fault that fails inside its locked region (dropping the guard by an
    /// early return) while another waits on the entry: the waiter is woken
    /// (loom reports a deadlock otherwise) and finds no entry left locked.
    #[test]
    fn loom_entry_lock_an_error_inside_the_lock_wakes_the_waiter() {
        fn failing(t: &WaitTable, ix: &EntryIndex) -> Result<(), ()> {
            let _l = ix.lock(t, 2, false).unwrap();
            Err(())
        }
        loom::model(|| {
            let t = Arc::new(WaitTable::new(1));
            let ix = Arc::new(EntryIndex::new(1));
            let allocs = Arc::new(AtomicU64::new(0));
            let (t2, ix2, a2) = (t.clone(), ix.clone(), allocs.clone());
            let h = thread::spawn(move || fault(&t2, &ix2, &a2, 2));
            assert!(failing(&t, &ix).is_err());
            h.join().unwrap();
            let (_, e) = ix.get(2).unwrap();
            assert!(!e.is_locked());
            assert_eq!(e.dev_blk(), Some(42));
        });
    }

    /// A 4 KiB fault inside a 2 MiB zero entry that another thread downgrades.
    #[test]
    fn loom_entry_lock_pmd_downgrade_wakes_all() {
        loom::model(|| {
            let t = Arc::new(WaitTable::new(1));
            let ix = Arc::new(EntryIndex::new(1));
            let l = ix.lock(&t, 0, true).unwrap();
            l.unlock(Entry::zero(true));
            let (t2, ix2) = (t.clone(), ix.clone());
            let h = thread::spawn(move || {
                let l = ix2.lock(&t2, 7, false).unwrap();
                l.keep();
            });
            let l = ix.lock(&t, 3, false).unwrap();
            let l = if l.entry.is_pmd() { l.downgrade(3) } else { l };
            l.unlock(Entry::block(9, false));
            h.join().unwrap();
            assert_eq!(ix.get(3).unwrap().1, Entry::block(9, false));
        });
    }
}
