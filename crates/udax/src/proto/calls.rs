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
//! number with SeqCst (a release of the words); the reader loads the
//! number with SeqCst (an acquire of them), then the length and the words
//! Relaxed. Sleeping is Dekker's handshake: the sleeper stores its flag,
//! then loads the other's number; the publisher stores its number, then
//! loads the sleeper's flag; all four SeqCst, so at least one side sees the
//! other's store: either the sleeper finds the message and does not sleep,
//! or the publisher finds the flag and rings. A stale ring (the sleeper
//! found the message after all) wakes the next sleep early, which then
//! looks again. The memory is shared with another process, so the atomics
//! are `std`'s over the mapping (loom cannot model another process;
//! `crate::sync`'s exceptions list this file).
#![allow(
    unsafe_code,
    reason = "the call page is a shared mapping read and written as atomics"
)]

use super::MAX_MESSAGE;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
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

/// One connection's call page, mapped in this process.
pub struct CallPage {
    words: *const AtomicU64,
}

// SAFETY: the mapping is only accessed through atomics, and it lives as
// long as the `CallPage` (unmapped in `drop`), whichever thread holds it.
unsafe impl Send for CallPage {}
// SAFETY: as above: shared access is atomic loads and stores only.
unsafe impl Sync for CallPage {}

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

    fn word(&self, i: usize) -> &AtomicU64 {
        assert!(i < WORDS);
        // SAFETY: `i` is inside the mapping, which is page-aligned (so
        // every word is 8-aligned) and lives as long as `self`; the memory
        // is only ever accessed as atomics, here and in the other process.
        unsafe { &*self.words.add(i) }
    }

    /// Store `msg` (at most [`AREA`] bytes) as words from word `at`.
    fn put(&self, at: usize, msg: &[u8]) {
        debug_assert!(msg.len() <= AREA);
        for (i, chunk) in msg.chunks(8).enumerate() {
            let mut w = [0u8; 8];
            w[..chunk.len()].copy_from_slice(chunk);
            // ORDERING: Relaxed: published by the SeqCst store of the
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
            // ORDERING: Relaxed: acquired by the SeqCst load of the
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
        // ORDERING: SeqCst: releases the message, and is the publisher's
        // store in the sleep handshake (module docs).
        self.word(REQ_SEQ).store(seq, Ordering::SeqCst);
        // ORDERING: SeqCst: the publisher's load in the handshake.
        self.word(OWNER_SLEEPS).load(Ordering::SeqCst) != 0
    }

    /// The client: the reply to request `seq`, once the owner has stored
    /// it (`Err` with its length if that is past the area).
    pub fn reply(&self, seq: u64) -> Option<Result<Vec<u8>, u64>> {
        // ORDERING: SeqCst: acquires the reply, and is the sleeper's load
        // in the handshake (module docs).
        if self.word(REP_SEQ).load(Ordering::SeqCst) != seq {
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

    /// The client: say whether it sleeps on the socket for a reply.
    pub fn client_sleeps(&self, yes: bool) {
        // ORDERING: SeqCst: the sleeper's store in the handshake.
        self.word(CLIENT_SLEEPS).store(yes as u64, Ordering::SeqCst);
    }

    /// The owner: the request after `seen`, if one was posted: its number
    /// and its bytes (empty if its length is past the area).
    pub fn request(&self, seen: u64) -> Option<(u64, Vec<u8>)> {
        // ORDERING: SeqCst: acquires the request, and is the sleeper's
        // load in the handshake (module docs).
        let seq = self.word(REQ_SEQ).load(Ordering::SeqCst);
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
        // ORDERING: SeqCst: releases the reply, and is the publisher's
        // store in the handshake (module docs).
        self.word(REP_SEQ).store(seq, Ordering::SeqCst);
        // ORDERING: SeqCst: the publisher's load in the handshake.
        self.word(CLIENT_SLEEPS).load(Ordering::SeqCst) != 0
    }

    /// The owner: say whether it sleeps on the socket for a request.
    pub fn owner_sleeps(&self, yes: bool) {
        // ORDERING: SeqCst: the sleeper's store in the handshake.
        self.word(OWNER_SLEEPS).store(yes as u64, Ordering::SeqCst);
    }
}

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

#[cfg(test)]
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
        owner.owner_sleeps(true);
        assert!(client.post(1, b"x"), "the client rings a sleeping owner");
        owner.owner_sleeps(false);
        assert!(!client.post(2, b"y"));
        client.client_sleeps(true);
        assert!(owner.answer(2, b"z"), "the owner rings a sleeping client");
        client.client_sleeps(false);
        assert!(!owner.answer(2, b"z"));
    }

    #[test]
    fn a_length_past_the_area_reads_as_no_message() {
        let (owner, client) = pair();
        client.post(1, b"hello");
        // A client that scribbles a length past the area.
        // ORDERING: Relaxed: the test's single thread.
        client.word(REQ_LEN).store(u64::MAX, Ordering::Relaxed);
        client.word(REQ_SEQ).store(2, Ordering::SeqCst);
        assert_eq!(owner.request(1), Some((2, Vec::new())));
        owner.answer(2, b"ok");
        owner.word(REP_LEN).store(AREA as u64 + 1, Ordering::SeqCst);
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
