//! The call page: one connection's requests and replies in memory shared
//! by the client and the owner, so that a call costs no system call while
//! both sides are awake (docs/multiprocess.md, "The call page").
//!
//! A round trip over the connection's socket costs two `sendmsg` and at
//! least two `recvmsg` calls even when both sides poll (P10-rtt 8-10 us on
//! these VMs); through the page, a side that polls sees the other's store
//! within a cache-line transfer. A side that stops polling sleeps on the
//! socket, and the other rings it awake there ([`DOORBELL`]), so a sleeper
//! also sees the other's death as the socket's end, as before.
//!
//! The owner makes the page for a connection that asks (`Request::Calls`):
//! a memfd of [`PAGE_BYTES`] whose size is sealed (a client cannot shrink
//! it under the owner's mapping), sent with the reply; both map it
//! read-write. Layout, in 8-byte words:
//! * line 0: word 0 a magic, word 1 the size of an area;
//! * line 1, the client's: word 8 the number of the last request posted,
//!   word 9 its length, word 10 whether the client sleeps on the socket;
//! * line 2, the owner's: word 16 the number of the request last answered,
//!   word 17 the reply's length, word 18 whether the owner sleeps on the
//!   socket;
//! * from byte 4096 the request area, then the reply area, [`AREA`] bytes
//!   each: a message as it would go on the socket, padded to words.
//!
//! One request at a time: a client posts the next only after it has read
//! the reply to the last (its connection's mutex). The owner copies a
//! request out before it decodes it, and a length past the area reads as
//! an empty message, which fails to decode: a client that scribbles on the
//! page gets errors, never the owner's memory.
//!
//! ORDERING: a message's words and length are stored Relaxed, then its
//! number with Release (publishing the words); the reader loads the number
//! with Acquire, then the length and the words Relaxed. Sleeping is
//! Dekker's handshake, with SeqCst fences: the sleeper stores its flag,
//! fence, then loads the other's number; the publisher stores its number,
//! fence, then loads the sleeper's flag. Of two SeqCst fences one comes
//! first, and the loads after the later one see the stores before the
//! earlier: either the sleeper finds the message and does not sleep, or
//! the publisher finds the flag and rings. A stale ring (the sleeper found
//! the message after all) wakes the next sleep early, which then looks
//! again ([`CallPage::sleep_for`]). Fences rather than SeqCst accesses, so
//! that loom, which models SeqCst fences but treats SeqCst accesses as
//! AcqRel, checks the handshake: the `loom_call_page_*` models run both
//! sides' real code, sleeping included, over a page of loom atomics (the
//! mapping shared with another process is the same code over `std`'s).
#![allow(
    unsafe_code,
    reason = "the call page is a shared mapping read and written as atomics"
)]

use super::MAX_MESSAGE;
use crate::sync::{fence, AtomicU64, Ordering};
use std::os::fd::OwnedFd;
#[cfg(not(loom))]
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

/// Bytes of one area: a whole message.
pub const AREA: usize = MAX_MESSAGE;
const HEADER_BYTES: usize = 4096;
/// Bytes of the shared memory.
pub const PAGE_BYTES: usize = HEADER_BYTES + 2 * AREA;
/// The message that wakes a side sleeping on the socket (no request or
/// reply is this short).
pub const DOORBELL: &[u8] = &[0xDB];
const MAGIC: u64 = u64::from_le_bytes(*b"UDXCALL1");

const REQ_SEQ: usize = 8;
const REQ_LEN: usize = 9;
const CLIENT_SLEEPS: usize = 10;
const REP_SEQ: usize = 16;
const REP_LEN: usize = 17;
const OWNER_SLEEPS: usize = 18;
const REQ_AREA: usize = HEADER_BYTES / 8;
const REP_AREA: usize = REQ_AREA + AREA / 8;
const WORDS: usize = PAGE_BYTES / 8;

/// One connection's call page, mapped in this process (under loom, a
/// page of model atomics: [`CallPage::model`]).
pub struct CallPage {
    #[cfg(not(loom))]
    words: *const AtomicU64,
    #[cfg(loom)]
    words: Box<[AtomicU64]>,
}

// SAFETY: the mapping is only accessed through atomics, and it lives as
// long as the `CallPage` (unmapped in `drop`), whichever thread holds it.
#[cfg(not(loom))]
unsafe impl Send for CallPage {}
// SAFETY: as above: shared access is atomic loads and stores only.
#[cfg(not(loom))]
unsafe impl Sync for CallPage {}

/// A side of the connection, for [`CallPage::sleep_for`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Client,
    Owner,
}

/// What a side sleeping on the socket woke to ([`CallPage::sleep_for`]).
#[derive(Debug, PartialEq, Eq)]
pub enum Woken<M> {
    /// The other side's [`DOORBELL`]: look at the page again.
    Bell,
    /// A message on the socket itself.
    Message(M),
    /// The connection's end.
    Closed,
}

impl std::fmt::Debug for CallPage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallPage")
            // ORDERING: Relaxed: a snapshot for a debug print.
            .field("posted", &self.word(REQ_SEQ).load(Ordering::Relaxed))
            // ORDERING: Relaxed: as above.
            .field("answered", &self.word(REP_SEQ).load(Ordering::Relaxed))
            .finish()
    }
}

impl CallPage {
    /// A new page (the owner's), mapped, and the descriptor to send the
    /// client (its size sealed).
    #[cfg(not(loom))]
    pub fn create() -> std::io::Result<(CallPage, OwnedFd)> {
        use rustix::fs::{MemfdFlags, SealFlags};
        let fd = crate::fdnum::raise(rustix::fs::memfd_create(
            "udax-calls",
            MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
        )?);
        rustix::fs::ftruncate(&fd, PAGE_BYTES as u64)?;
        rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL)?;
        let p = CallPage::map(fd.as_fd())?;
        // ORDERING: Relaxed: before the descriptor is sent to anyone.
        p.word(0).store(MAGIC, Ordering::Relaxed);
        // ORDERING: Relaxed: as above.
        p.word(1).store(AREA as u64, Ordering::Relaxed);
        Ok((p, fd))
    }

    /// Map the page the owner sent (`fd`), checking its shape.
    #[cfg(not(loom))]
    pub fn attach(fd: OwnedFd) -> std::io::Result<CallPage> {
        let len = rustix::fs::fstat(&fd)?.st_size;
        if len != PAGE_BYTES as i64 {
            return Err(std::io::Error::other(format!(
                "a call page of {len} bytes (want {PAGE_BYTES})"
            )));
        }
        let seals = rustix::fs::fcntl_get_seals(&fd)?;
        if !seals.contains(rustix::fs::SealFlags::SHRINK) {
            return Err(std::io::Error::other("a call page that may shrink"));
        }
        let p = CallPage::map(fd.as_fd())?;
        // ORDERING: Relaxed: written before the descriptor was sent.
        if p.word(0).load(Ordering::Relaxed) != MAGIC
            // ORDERING: Relaxed: as above.
            || p.word(1).load(Ordering::Relaxed) != AREA as u64
        {
            return Err(std::io::Error::other("not a udax call page"));
        }
        Ok(p)
    }

    #[cfg(not(loom))]
    fn map(fd: BorrowedFd<'_>) -> std::io::Result<CallPage> {
        use rustix::mm::{MapFlags, ProtFlags};
        // SAFETY: a fresh mapping chosen by the kernel (null hint) replaces
        // no memory; `fd` is a file of `PAGE_BYTES` bytes whose size is
        // sealed (made so, or checked by `attach`), so no access faults.
        let p = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                PAGE_BYTES,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                fd,
                0,
            )
        }?;
        Ok(CallPage {
            words: p.cast::<AtomicU64>().cast_const(),
        })
    }

    /// Under loom no memory is shared with another process: the page of
    /// the models, a client and an owner thread sharing it.
    #[cfg(loom)]
    pub fn create() -> std::io::Result<(CallPage, OwnedFd)> {
        Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
    }

    /// As [`CallPage::create`]: none under loom.
    #[cfg(loom)]
    pub fn attach(_fd: OwnedFd) -> std::io::Result<CallPage> {
        Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
    }

    /// A page of loom atomics, with the owner's header words.
    #[cfg(loom)]
    pub fn model() -> CallPage {
        let p = CallPage {
            words: (0..WORDS).map(|_| AtomicU64::new(0)).collect(),
        };
        // ORDERING: Relaxed: before the page is shared.
        p.word(0).store(MAGIC, Ordering::Relaxed);
        // ORDERING: Relaxed: as above.
        p.word(1).store(AREA as u64, Ordering::Relaxed);
        p
    }

    #[cfg(not(loom))]
    fn word(&self, i: usize) -> &AtomicU64 {
        assert!(i < WORDS);
        // SAFETY: `i` is inside the mapping, which is page-aligned (so
        // every word is 8-aligned) and lives as long as `self`; the memory
        // is only ever accessed as atomics, here and in the other process.
        unsafe { &*self.words.add(i) }
    }

    #[cfg(loom)]
    fn word(&self, i: usize) -> &AtomicU64 {
        &self.words[i]
    }

    /// Store `msg` (at most [`AREA`] bytes) as words from word `at`.
    fn put(&self, at: usize, msg: &[u8]) {
        debug_assert!(msg.len() <= AREA);
        for (i, chunk) in msg.chunks(8).enumerate() {
            let mut w = [0u8; 8];
            w[..chunk.len()].copy_from_slice(chunk);
            // ORDERING: Relaxed: published by the Release store of the
            // message's number (module docs).
            self.word(at + i)
                .store(u64::from_le_bytes(w), Ordering::Relaxed);
        }
    }

    /// The `len` bytes from word `at`; empty if `len` is past an area.
    fn take(&self, at: usize, len: u64) -> Vec<u8> {
        if len > AREA as u64 {
            return Vec::new();
        }
        let len = len as usize;
        let mut out = Vec::with_capacity(len.next_multiple_of(8));
        for i in 0..len.div_ceil(8) {
            // ORDERING: Relaxed: acquired by the Acquire load of the
            // message's number (module docs).
            out.extend_from_slice(&self.word(at + i).load(Ordering::Relaxed).to_le_bytes());
        }
        out.truncate(len);
        out
    }

    /// The client: post request `seq` (`msg`, at most [`AREA`] bytes; the
    /// reply to `seq - 1`, if any, already read). Returns whether the
    /// owner sleeps, so that the caller rings.
    pub fn post(&self, seq: u64, msg: &[u8]) -> bool {
        self.put(REQ_AREA, msg);
        // ORDERING: Relaxed: published by the store below.
        self.word(REQ_LEN)
            .store(msg.len() as u64, Ordering::Relaxed);
        self.publish(REQ_SEQ, seq, OWNER_SLEEPS)
    }

    /// Store the number `seq` at word `at` (Release: the message before
    /// it goes with it), then tell whether the other side sleeps (its flag
    /// at word `flag`): the publisher's half of the handshake.
    fn publish(&self, at: usize, seq: u64, flag: usize) -> bool {
        // ORDERING: Release: publishes the message's words and length.
        self.word(at).store(seq, Ordering::Release);
        // ORDERING: SeqCst: the publisher's fence of the handshake
        // (module docs), between its store and its load of the flag.
        fence(Ordering::SeqCst);
        // ORDERING: Relaxed: ordered after the store by the fence.
        self.word(flag).load(Ordering::Relaxed) != 0
    }

    /// The client: the reply to request `seq`, once the owner has stored
    /// it (`Err` with its length if that is past the area).
    pub fn reply(&self, seq: u64) -> Option<Result<Vec<u8>, u64>> {
        // ORDERING: Acquire: the reply's words and length come with it;
        // after a sleeper's fence, its load of the handshake.
        if self.word(REP_SEQ).load(Ordering::Acquire) != seq {
            return None;
        }
        // ORDERING: Relaxed: acquired by the load above.
        let len = self.word(REP_LEN).load(Ordering::Relaxed);
        Some(if len > AREA as u64 {
            Err(len)
        } else {
            Ok(self.take(REP_AREA, len))
        })
    }

    /// The owner: the request after `seen`, if one was posted: its number
    /// and its bytes (empty if its length is past the area).
    pub fn request(&self, seen: u64) -> Option<(u64, Vec<u8>)> {
        // ORDERING: Acquire: the request's words and length come with it;
        // after a sleeper's fence, its load of the handshake.
        let seq = self.word(REQ_SEQ).load(Ordering::Acquire);
        if seq == seen {
            return None;
        }
        // ORDERING: Relaxed: acquired by the load above.
        let len = self.word(REQ_LEN).load(Ordering::Relaxed);
        Some((seq, self.take(REQ_AREA, len)))
    }

    /// The owner: store the reply `msg` (at most [`AREA`] bytes) to
    /// request `seq`. Returns whether the client sleeps, so that the
    /// caller rings.
    pub fn answer(&self, seq: u64, msg: &[u8]) -> bool {
        self.put(REP_AREA, msg);
        // ORDERING: Relaxed: published by the store below.
        self.word(REP_LEN)
            .store(msg.len() as u64, Ordering::Relaxed);
        self.publish(REP_SEQ, seq, CLIENT_SLEEPS)
    }

    /// Say whether `side` sleeps on the socket; when it starts to, the
    /// sleeper's fence of the handshake follows the store (module docs).
    pub fn sleeps(&self, side: Side, yes: bool) {
        let flag = match side {
            Side::Client => CLIENT_SLEEPS,
            Side::Owner => OWNER_SLEEPS,
        };
        // ORDERING: Relaxed: ordered before the next look by the fence
        // below; a flag left set a while longer costs a spare ring.
        self.word(flag).store(yes as u64, Ordering::Relaxed);
        if yes {
            // ORDERING: SeqCst: the sleeper's fence of the handshake,
            // between its flag and its look at the other's number.
            fence(Ordering::SeqCst);
        }
    }

    /// Sleep on the socket until `look` finds what `side` waits for on
    /// the page: say so ([`CallPage::sleeps`]), look once more, then
    /// `wait` for the socket's next message; a [`DOORBELL`] (`Woken::Bell`)
    /// means look again. `Ok(Err(m))`: the socket brought a message `m`
    /// instead (`None`: the connection's end).
    pub fn sleep_for<T, M>(
        &self,
        side: Side,
        mut look: impl FnMut() -> Option<T>,
        mut wait: impl FnMut() -> std::io::Result<Woken<M>>,
    ) -> std::io::Result<Result<T, Option<M>>> {
        loop {
            self.sleeps(side, true);
            if let Some(x) = look() {
                self.sleeps(side, false);
                return Ok(Ok(x));
            }
            let woke = wait();
            self.sleeps(side, false);
            match woke? {
                Woken::Bell => continue,
                Woken::Message(m) => return Ok(Err(Some(m))),
                Woken::Closed => return Ok(Err(None)),
            }
        }
    }
}

#[cfg(not(loom))]
impl Drop for CallPage {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, of `PAGE_BYTES`; no reference
        // into it outlives `self` (`word` borrows `self`).
        let _ = unsafe { rustix::mm::munmap(self.words.cast_mut().cast(), PAGE_BYTES) };
    }
}

/// Poll `look` until it gives something or `budget` has passed: a CPU
/// relaxation between looks, and a yield every few, so that a thread the
/// poller would keep off this CPU gets it.
pub fn poll<T>(budget: Duration, mut look: impl FnMut() -> Option<T>) -> Option<T> {
    if budget.is_zero() {
        return look();
    }
    let until = Instant::now() + budget;
    let mut n = 0u32;
    loop {
        if let Some(x) = look() {
            return Some(x);
        }
        n = n.wrapping_add(1);
        if n.is_multiple_of(64) {
            if Instant::now() >= until {
                return None;
            }
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// A page as the client sees it: attached from the owner's descriptor
    /// (a second mapping of the same memory).
    fn pair() -> (CallPage, CallPage) {
        let (owner, fd) = CallPage::create().unwrap();
        (owner, CallPage::attach(fd).unwrap())
    }

    #[test]
    fn a_request_and_its_reply_cross_the_page_whole() {
        let (owner, client) = pair();
        assert_eq!(owner.request(0), None);
        let req: Vec<u8> = (0..1001u32).map(|i| i as u8).collect();
        assert!(!client.post(1, &req), "the owner does not sleep");
        assert_eq!(client.reply(1), None);
        let (seq, got) = owner.request(0).unwrap();
        assert_eq!((seq, &got), (1, &req));
        assert_eq!(owner.request(1), None, "seen once");
        let rep = vec![7u8; AREA];
        assert!(!owner.answer(1, &rep));
        assert_eq!(client.reply(1), Some(Ok(rep)));
        // The next request replaces the last; a short one after a long one.
        client.post(2, b"abc");
        assert_eq!(owner.request(1), Some((2, b"abc".to_vec())));
    }

    #[test]
    fn a_sleeping_side_is_seen_by_the_other_so_it_rings() {
        let (owner, client) = pair();
        owner.sleeps(Side::Owner, true);
        assert!(client.post(1, b"x"), "the client rings a sleeping owner");
        owner.sleeps(Side::Owner, false);
        assert!(!client.post(2, b"y"));
        client.sleeps(Side::Client, true);
        assert!(owner.answer(2, b"z"), "the owner rings a sleeping client");
        client.sleeps(Side::Client, false);
        assert!(!owner.answer(2, b"z"));
    }

    #[test]
    fn a_length_past_the_area_reads_as_no_message() {
        let (owner, client) = pair();
        client.post(1, b"hello");
        // A client that scribbles a length past the area.
        // ORDERING: Relaxed: the test's single thread.
        client.word(REQ_LEN).store(u64::MAX, Ordering::Relaxed);
        // ORDERING: Release: as `post` publishes.
        client.word(REQ_SEQ).store(2, Ordering::Release);
        assert_eq!(owner.request(1), Some((2, Vec::new())));
        owner.answer(2, b"ok");
        // ORDERING: Relaxed: the test's single thread.
        owner
            .word(REP_LEN)
            .store(AREA as u64 + 1, Ordering::Relaxed);
        assert_eq!(client.reply(2), Some(Err(AREA as u64 + 1)));
    }

    #[test]
    fn a_page_that_is_not_one_is_refused() {
        let f = rustix::fs::memfd_create("x", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        rustix::fs::ftruncate(&f, PAGE_BYTES as u64).unwrap();
        let e = CallPage::attach(f).unwrap_err().to_string();
        assert!(e.contains("may shrink"), "{e}");
        let (_owner, fd) = CallPage::create().unwrap();
        let again = fd.try_clone().unwrap();
        assert!(rustix::fs::ftruncate(&again, 4096).is_err(), "sealed");
        let g = rustix::fs::memfd_create(
            "y",
            rustix::fs::MemfdFlags::CLOEXEC | rustix::fs::MemfdFlags::ALLOW_SEALING,
        )
        .unwrap();
        rustix::fs::ftruncate(&g, PAGE_BYTES as u64).unwrap();
        rustix::fs::fcntl_add_seals(&g, rustix::fs::SealFlags::SHRINK).unwrap();
        let e = CallPage::attach(g).unwrap_err().to_string();
        assert!(e.contains("not a udax call page"), "{e}");
    }

    #[test]
    fn two_threads_trade_ten_thousand_calls_through_one_page() {
        let (owner, client) = pair();
        let server = std::thread::spawn(move || {
            let mut seen = 0;
            while seen < 10_000 {
                if let Some((seq, msg)) = poll(Duration::from_secs(10), || owner.request(seen)) {
                    let mut rep = msg.clone();
                    rep.reverse();
                    owner.answer(seq, &rep);
                    seen = seq;
                } else {
                    panic!("no request within 10 s");
                }
            }
        });
        for seq in 1..=10_000u64 {
            let msg = seq.to_le_bytes()[..(seq % 8 + 1) as usize].to_vec();
            client.post(seq, &msg);
            let got = poll(Duration::from_secs(10), || client.reply(seq))
                .expect("a reply within 10 s")
                .unwrap();
            let mut want = msg;
            want.reverse();
            assert_eq!(got, want, "call {seq}");
        }
        server.join().unwrap();
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    //! The handshake, model-checked: a client and an owner thread run the
    //! page's real code, each sleeping on a "socket" (a counted doorbell
    //! under a mutex and condvar) whenever the page shows nothing, as they
    //! do once their polls run out. A lost wake-up leaves a thread blocked
    //! for ever, which loom reports as a deadlock.
    use super::*;
    use crate::sync::{thread, Arc, Condvar, Mutex};

    /// One direction of the socket: doorbells rung and not yet read.
    #[derive(Default)]
    struct Bells {
        rung: Mutex<u32>,
        cv: Condvar,
    }

    impl Bells {
        fn ring(&self) {
            *self.rung.lock() += 1;
            self.cv.notify_one();
        }

        fn wait(&self) -> std::io::Result<Woken<()>> {
            let mut g = self.rung.lock();
            while *g == 0 {
                self.cv.wait(&mut g);
            }
            *g -= 1;
            Ok(Woken::Bell)
        }
    }

    /// `calls` round trips, each side looking at the page once before it
    /// sleeps (`poll` with no budget), as the owner's and the client's
    /// loops do.
    fn calls(calls: u64) {
        loom::model(move || {
            let page = Arc::new(CallPage::model());
            let (to_owner, to_client) = (Arc::new(Bells::default()), Arc::new(Bells::default()));
            let owner = {
                let (page, to_owner, to_client) =
                    (page.clone(), to_owner.clone(), to_client.clone());
                thread::spawn(move || {
                    let mut seen = 0;
                    while seen < calls {
                        let (seq, msg) = match page.request(seen) {
                            Some(r) => r,
                            None => page
                                .sleep_for(Side::Owner, || page.request(seen), || to_owner.wait())
                                .unwrap()
                                .expect("no socket message in the model"),
                        };
                        let mut rep = msg;
                        rep.push(0xAA);
                        if page.answer(seq, &rep) {
                            to_client.ring();
                        }
                        seen = seq;
                    }
                })
            };
            for seq in 1..=calls {
                if page.post(seq, &[seq as u8; 3]) {
                    to_owner.ring();
                }
                let got = match page.reply(seq) {
                    Some(r) => r,
                    None => page
                        .sleep_for(Side::Client, || page.reply(seq), || to_client.wait())
                        .unwrap()
                        .expect("no socket message in the model"),
                };
                assert_eq!(got.unwrap(), vec![seq as u8, seq as u8, seq as u8, 0xAA]);
            }
            owner.join().unwrap();
        });
    }

    #[test]
    fn loom_call_page_one_call_no_lost_wakeup() {
        calls(1);
    }

    #[test]
    fn loom_call_page_two_calls_no_lost_wakeup_and_replies_in_order() {
        calls(2);
    }
}
