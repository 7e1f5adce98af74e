//! The owner's change log: what clients' attribute caches must drop, in
//! shared memory (docs/multiprocess.md, "Attribute cache in clients").
//!
//! The owner appends a record for every change `stat` or a listing may
//! show before it answers the change; a client reads the records it has
//! not seen before it answers from its cache. So a `stat` in one client
//! sees another client's change as soon as that client's call returns,
//! and a change costs no round trip to the clients that cache.
//!
//! Layout: a memfd of [`RING_BYTES`]: word 0 the count of records ever
//! appended (`head`), word 1 a magic, word 2 the slot count, words 3-6 the
//! file system's changing totals ([`Space`]: a sequence word, then free
//! blocks, inodes and metadata bytes); records from byte 64, two words
//! each (a tag and a key), record `n` in slot `n % RING_SLOTS`. One writer (the owner, under its lock); clients map
//! it read-only. A reader that fell more than a ring behind (or whose
//! slots a batch in progress may be rewriting) drops everything.
//!
//! Orderings: the writer issues a release fence before it stores a batch's
//! slots and stores `head` with release after them; a reader loads `head`
//! with acquire, then the slots, then an acquire fence, then `head` again.
//! A slot store the reader saw that belongs to a later batch is after the
//! writer's fence, which then synchronises with the reader's fence: the
//! second `head` load sees that batch's predecessors and the reader finds
//! itself lapped. The totals are a sequence lock: the writer makes the
//! sequence odd, issues a release fence, stores the values and stores the
//! sequence even with release; a reader loads it with acquire, the values,
//! issues an acquire fence and loads it again, and tries again if it was
//! odd or moved (a bounded number of times: a writer killed mid-update
//! leaves it odd). The memory is shared with other processes, so the
//! atomics are `std`'s over the mapping (loom cannot model another
//! process; `crate::sync`'s exceptions list this file).
#![allow(
    unsafe_code,
    reason = "the change log is a shared mapping read and written as atomics"
)]

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{fence, AtomicU64, Ordering};

/// Records the ring holds.
pub const RING_SLOTS: u64 = 1 << 15;
/// Records one append may hold at most (a change with more says `All`).
pub const MAX_BATCH: usize = 256;
const HEADER_WORDS: usize = 8;
const MAGIC: u64 = u64::from_le_bytes(*b"UDXRING1");
/// Bytes of the shared memory.
pub const RING_BYTES: usize = (HEADER_WORDS + 2 * RING_SLOTS as usize) * 8;

/// The totals `statfs` shows that change (the others are fixed while the
/// owner runs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Space {
    pub free_blocks: u64,
    pub inodes: u64,
    pub metadata_bytes: u64,
}

/// Words of the totals: the sequence, then [`Space`]'s three.
const SPACE_AT: usize = 3;

/// Reads of the totals a reader tries before it gives up.
const SPACE_TRIES: usize = 1000;

/// One record: what a cache drops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rec {
    /// Answers whose path walks looked up this name key (a listing key: a
    /// directory's entries).
    Name(u64),
    /// The attributes of this inode.
    Ino(u64),
    /// Everything.
    All,
}

impl Rec {
    fn words(self) -> (u64, u64) {
        match self {
            Rec::Name(k) => (1, k),
            Rec::Ino(i) => (2, i),
            Rec::All => (3, 0),
        }
    }

    fn of(tag: u64, key: u64) -> Rec {
        match tag {
            1 => Rec::Name(key),
            2 => Rec::Ino(key),
            _ => Rec::All,
        }
    }
}

/// A reader's answer: the records since its last look, or that it fell
/// behind.
#[derive(Debug, PartialEq, Eq)]
pub enum Caught {
    /// The records from `from` to `to` (nothing new when empty).
    Records { to: u64, recs: Vec<Rec> },
    /// Records were overwritten before they were read: drop everything,
    /// go on from `to`.
    Lapped { to: u64 },
}

/// The change log mapped in this process.
pub struct Ring {
    words: *const AtomicU64,
    fd: OwnedFd,
}

// SAFETY: the mapping is only accessed through atomics, and it lives as
// long as the `Ring` (unmapped in `drop`), whichever thread holds it.
unsafe impl Send for Ring {}
// SAFETY: as above: shared access is atomic loads and stores only.
unsafe impl Sync for Ring {}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring").field("head", &self.head()).finish()
    }
}

impl Ring {
    /// A new, empty log (the owner's), mapped read-write.
    pub fn create() -> std::io::Result<Ring> {
        let fd = rustix::fs::memfd_create("udax-changes", rustix::fs::MemfdFlags::CLOEXEC)?;
        rustix::fs::ftruncate(&fd, RING_BYTES as u64)?;
        let r = Ring::map(fd, true)?;
        // ORDERING: Relaxed: before the descriptor is sent to anyone.
        r.word(1).store(MAGIC, Ordering::Relaxed);
        // ORDERING: Relaxed: as above.
        r.word(2).store(RING_SLOTS, Ordering::Relaxed);
        Ok(r)
    }

    /// A descriptor of the log that maps it read-only (for a client).
    pub fn read_only_fd(&self) -> std::io::Result<OwnedFd> {
        use std::os::fd::AsRawFd;
        let path = format!("/proc/self/fd/{}", self.fd.as_raw_fd());
        Ok(std::fs::File::open(path)?.into())
    }

    /// Map the log the owner sent (`fd`), read-only, checking its shape.
    pub fn attach(fd: OwnedFd) -> std::io::Result<Ring> {
        let len = rustix::fs::fstat(&fd)?.st_size;
        if len != RING_BYTES as i64 {
            return Err(std::io::Error::other(format!(
                "a change log of {len} bytes (want {RING_BYTES})"
            )));
        }
        let r = Ring::map(fd, false)?;
        // ORDERING: Relaxed: written before the descriptor was sent.
        if r.word(1).load(Ordering::Relaxed) != MAGIC
            || r.word(2).load(Ordering::Relaxed) != RING_SLOTS
        {
            return Err(std::io::Error::other("not a udax change log"));
        }
        Ok(r)
    }

    fn map(fd: OwnedFd, writable: bool) -> std::io::Result<Ring> {
        use rustix::mm::{MapFlags, ProtFlags};
        let prot = if writable {
            ProtFlags::READ | ProtFlags::WRITE
        } else {
            ProtFlags::READ
        };
        // SAFETY: a fresh mapping chosen by the kernel (null hint) replaces
        // no memory; `fd` is a file of `RING_BYTES` bytes (made so, or
        // checked by `attach`).
        let p = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                RING_BYTES,
                prot,
                MapFlags::SHARED,
                fd.as_fd(),
                0,
            )
        }?;
        Ok(Ring {
            words: p.cast::<AtomicU64>().cast_const(),
            fd,
        })
    }

    fn word(&self, i: usize) -> &AtomicU64 {
        assert!(i < RING_BYTES / 8);
        // SAFETY: `i` is inside the mapping, which is page-aligned (so
        // every word is 8-aligned) and lives as long as `self`; the memory
        // is only ever accessed as atomics. A read-only mapping is only
        // loaded from (only the owner's, made writable, is stored to).
        unsafe { &*self.words.add(i) }
    }

    fn slot(&self, n: u64) -> (&AtomicU64, &AtomicU64) {
        let i = HEADER_WORDS + 2 * (n % RING_SLOTS) as usize;
        (self.word(i), self.word(i + 1))
    }

    /// Records appended so far.
    pub fn head(&self) -> u64 {
        // ORDERING: Acquire: pairs with `append`'s Release store; the
        // slots before it are then visible.
        self.word(0).load(Ordering::Acquire)
    }

    /// Append `recs` (the owner, one caller at a time: it holds its lock;
    /// only on the writable mapping). More than [`MAX_BATCH`] records
    /// append `All`.
    pub fn append(&self, recs: &[Rec]) {
        let recs = if recs.len() > MAX_BATCH {
            &[Rec::All][..]
        } else {
            recs
        };
        // ORDERING: Relaxed: the only writer reads its own store.
        let head = self.word(0).load(Ordering::Relaxed);
        // ORDERING: a reader that sees one of the slot stores below also
        // sees every `head` before them (see the module docs).
        fence(Ordering::Release);
        for (n, r) in (head..).zip(recs) {
            let (tag, key) = self.slot(n);
            let (t, k) = r.words();
            // ORDERING: Relaxed: published by the Release store of `head`.
            tag.store(t, Ordering::Relaxed);
            // ORDERING: Relaxed: as above.
            key.store(k, Ordering::Relaxed);
        }
        // ORDERING: Release: publishes the slots to `head`'s Acquire loads.
        self.word(0)
            .store(head + recs.len() as u64, Ordering::Release);
    }

    /// Publish the totals (the owner, under the same lock as `append`;
    /// only on the writable mapping).
    pub fn set_space(&self, s: Space) {
        // ORDERING: Relaxed: the only writer reads its own store.
        let seq = self.word(SPACE_AT).load(Ordering::Relaxed);
        // ORDERING: Relaxed: the fence below orders it before the values.
        self.word(SPACE_AT).store(seq | 1, Ordering::Relaxed);
        // ORDERING: a reader that sees a value stored below sees the odd
        // sequence too (through its acquire fence; module docs).
        fence(Ordering::Release);
        for (i, v) in [s.free_blocks, s.inodes, s.metadata_bytes]
            .into_iter()
            .enumerate()
        {
            // ORDERING: Relaxed: published by the Release store below.
            self.word(SPACE_AT + 1 + i).store(v, Ordering::Relaxed);
        }
        // ORDERING: Release: publishes the values to the Acquire load of
        // a reader that sees this sequence.
        self.word(SPACE_AT).store((seq | 1) + 1, Ordering::Release);
    }

    /// The totals last published; `None` before the first, or if a
    /// consistent copy could not be read (a writer died mid-update).
    pub fn space(&self) -> Option<Space> {
        for _ in 0..SPACE_TRIES {
            // ORDERING: Acquire: pairs with `set_space`'s Release store.
            let seq = self.word(SPACE_AT).load(Ordering::Acquire);
            if seq == 0 {
                return None;
            }
            // ORDERING: Relaxed: checked by the fence and the second load.
            let v = |i: usize| self.word(SPACE_AT + 1 + i).load(Ordering::Relaxed);
            let s = Space {
                free_blocks: v(0),
                inodes: v(1),
                metadata_bytes: v(2),
            };
            // ORDERING: a value of a later update seen above makes the
            // load below see that update's odd sequence (module docs).
            fence(Ordering::Acquire);
            // ORDERING: Relaxed: ordered by the fence.
            if seq & 1 == 0 && self.word(SPACE_AT).load(Ordering::Relaxed) == seq {
                return Some(s);
            }
            std::hint::spin_loop();
        }
        None
    }

    /// The records after the first `from`.
    pub fn since(&self, from: u64) -> Caught {
        let to = self.head();
        if to < from || to - from > RING_SLOTS - MAX_BATCH as u64 {
            return Caught::Lapped { to };
        }
        let recs = (from..to)
            .map(|n| {
                let (tag, key) = self.slot(n);
                // ORDERING: Relaxed: checked by the fence and the second
                // `head` load below.
                Rec::of(tag.load(Ordering::Relaxed), key.load(Ordering::Relaxed))
            })
            .collect();
        // ORDERING: see the module docs: a slot rewritten meanwhile makes
        // the load below see the batch before it.
        fence(Ordering::Acquire);
        // ORDERING: Relaxed: ordered by the fence.
        let now = self.word(0).load(Ordering::Relaxed);
        // A batch in progress rewrites at most `MAX_BATCH` slots past `now`.
        if now + MAX_BATCH as u64 > from + RING_SLOTS {
            return Caught::Lapped { to: now };
        }
        Caught::Records { to, recs }
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, of `RING_BYTES`; no reference
        // into it outlives `self` (`word` borrows `self`).
        let _ = unsafe { rustix::mm::munmap(self.words.cast_mut().cast(), RING_BYTES) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reader_gets_each_record_once_in_order_through_a_read_only_mapping() {
        let w = Ring::create().unwrap();
        let r = Ring::attach(w.read_only_fd().unwrap()).unwrap();
        assert_eq!(
            r.since(0),
            Caught::Records {
                to: 0,
                recs: vec![]
            }
        );
        w.append(&[Rec::Name(7), Rec::Ino(3)]);
        w.append(&[Rec::All]);
        assert_eq!(
            r.since(0),
            Caught::Records {
                to: 3,
                recs: vec![Rec::Name(7), Rec::Ino(3), Rec::All]
            }
        );
        assert_eq!(
            r.since(2),
            Caught::Records {
                to: 3,
                recs: vec![Rec::All]
            }
        );
    }

    #[test]
    fn a_reader_a_ring_behind_is_lapped_and_a_batch_too_big_says_all() {
        let w = Ring::create().unwrap();
        let batch = vec![Rec::Ino(1); MAX_BATCH];
        for _ in 0..(RING_SLOTS as usize / MAX_BATCH) {
            w.append(&batch);
        }
        assert_eq!(w.since(0), Caught::Lapped { to: RING_SLOTS });
        let at = w.head();
        w.append(&vec![Rec::Ino(2); MAX_BATCH + 1]);
        assert_eq!(
            w.since(at),
            Caught::Records {
                to: at + 1,
                recs: vec![Rec::All]
            }
        );
    }

    #[test]
    fn a_file_of_another_shape_is_not_attached() {
        let fd = rustix::fs::memfd_create("x", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        rustix::fs::ftruncate(&fd, 4096).unwrap();
        assert!(Ring::attach(fd).is_err());
        let fd = rustix::fs::memfd_create("x", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        rustix::fs::ftruncate(&fd, RING_BYTES as u64).unwrap();
        assert!(Ring::attach(fd).is_err(), "no magic");
    }

    #[test]
    fn a_reader_racing_a_writer_sees_records_in_order_or_finds_itself_lapped() {
        let w = std::sync::Arc::new(Ring::create().unwrap());
        let r = Ring::attach(w.read_only_fd().unwrap()).unwrap();
        let writer = {
            let w = w.clone();
            std::thread::spawn(move || {
                for i in 0..200_000u64 {
                    w.append(&[Rec::Ino(i)]);
                }
            })
        };
        let (mut at, mut next, mut lapped) = (0, 0u64, 0);
        while at < 200_000 {
            match r.since(at) {
                Caught::Records { to, recs } => {
                    for rec in recs {
                        assert_eq!(rec, Rec::Ino(next), "a record out of order or torn");
                        next += 1;
                    }
                    at = to;
                }
                Caught::Lapped { to } => {
                    lapped += 1;
                    (at, next) = (to, to);
                }
            }
        }
        writer.join().unwrap();
        assert_eq!(next, 200_000, "{lapped} laps");
    }

    #[test]
    fn totals_are_none_until_published_then_the_last_published() {
        let w = Ring::create().unwrap();
        let r = Ring::attach(w.read_only_fd().unwrap()).unwrap();
        assert_eq!(r.space(), None);
        let a = Space {
            free_blocks: 10,
            inodes: 3,
            metadata_bytes: 4096,
        };
        w.set_space(a);
        assert_eq!(r.space(), Some(a));
        let b = Space {
            free_blocks: 9,
            ..a
        };
        w.set_space(b);
        assert_eq!(r.space(), Some(b));
    }

    #[test]
    fn a_reader_racing_the_writer_of_the_totals_sees_only_whole_updates() {
        let w = std::sync::Arc::new(Ring::create().unwrap());
        let r = Ring::attach(w.read_only_fd().unwrap()).unwrap();
        w.set_space(Space::default());
        let writer = {
            let w = w.clone();
            std::thread::spawn(move || {
                for n in 1..=200_000u64 {
                    w.set_space(Space {
                        free_blocks: n,
                        inodes: n,
                        metadata_bytes: n,
                    });
                }
            })
        };
        let mut last = 0;
        let mut reads = 0u64;
        while !writer.is_finished() || reads == 0 {
            if let Some(s) = r.space() {
                assert_eq!((s.inodes, s.metadata_bytes), (s.free_blocks, s.free_blocks));
                assert!(s.free_blocks >= last, "the totals went back");
                last = s.free_blocks;
                reads += 1;
            }
        }
        writer.join().unwrap();
        assert_eq!(r.space().unwrap().free_blocks, 200_000);
    }
}
