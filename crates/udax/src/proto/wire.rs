//! The socket under the protocol: `SOCK_SEQPACKET` unix sockets (one
//! message per datagram, kept whole by the kernel), a descriptor passed with
//! a message (SCM_RIGHTS), and the peer's credentials (SO_PEERCRED).

use super::MAX_MESSAGE;
use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags,
    SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketAddrUnix, SocketFlags, SocketType,
};
use std::io::{Error, ErrorKind, IoSlice, IoSliceMut, Result};
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

/// A new socket of the protocol's kind (close-on-exec).
fn socket() -> Result<OwnedFd> {
    Ok(crate::fdnum::raise(rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )?))
}

/// Listen on `path` (which must not exist).
pub fn listen(path: &Path) -> Result<OwnedFd> {
    let s = socket()?;
    rustix::net::bind(&s, &SocketAddrUnix::new(path)?)?;
    rustix::net::listen(&s, 64)?;
    Ok(s)
}

/// Connect to the listener at `path`.
pub fn connect(path: &Path) -> Result<OwnedFd> {
    let s = socket()?;
    rustix::net::connect(&s, &SocketAddrUnix::new(path)?)?;
    Ok(s)
}

/// Accept a connection (close-on-exec).
pub fn accept(listener: BorrowedFd<'_>) -> Result<OwnedFd> {
    Ok(crate::fdnum::raise(rustix::net::accept_with(
        listener,
        SocketFlags::CLOEXEC,
    )?))
}

/// The peer's process id, user id and group id, as the kernel recorded
/// them at `connect`.
pub fn peer(sock: BorrowedFd<'_>) -> Result<(i32, u32, u32)> {
    let c = rustix::net::sockopt::socket_peercred(sock)?;
    Ok((c.pid.as_raw_nonzero().get(), c.uid.as_raw(), c.gid.as_raw()))
}

/// Send one message, with `fd` attached if given.
pub fn send(sock: BorrowedFd<'_>, msg: &[u8], fd: Option<BorrowedFd<'_>>) -> Result<()> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    let fds;
    if let Some(fd) = fd {
        fds = [fd];
        control.push(SendAncillaryMessage::ScmRights(&fds));
    }
    let n = rustix::net::sendmsg(
        sock,
        &[IoSlice::new(msg)],
        &mut control,
        SendFlags::NOSIGNAL,
    )?;
    if n != msg.len() {
        return Err(Error::other(format!("sent {n} of {} bytes", msg.len())));
    }
    Ok(())
}

/// Receive one message and the descriptor sent with it, if any. `Ok(None)`
/// when the peer has closed the connection, or sent an empty message (a
/// `SOCK_SEQPACKET` receiver cannot tell the two apart; the protocol has no
/// empty message). A message longer than
/// [`MAX_MESSAGE`] is an error (`InvalidData`), as is more than one
/// descriptor (all received ones are closed).
pub fn recv(sock: BorrowedFd<'_>) -> Result<Option<(Vec<u8>, Option<OwnedFd>)>> {
    recv_spinning(sock, Duration::ZERO)
}

/// A message, `None` at end of connection (as [`recv`]).
type Received = Option<(Vec<u8>, Option<OwnedFd>)>;

/// As [`recv`], but polling without blocking for up to `spin` first, then
/// blocking. On these VMs a receiver that sleeps costs a round trip ~45 us
/// (the idle vCPU's wake-up, not the socket: measured 4 us when the
/// receiver polls); a message due within `spin` (a reply, or a client's
/// next request right after the last reply) is taken while the receiver is
/// still awake. Spinning burns the CPU for at most `spin` per call: callers
/// spin only where a message is due soon, and never on a machine with one
/// CPU ([`spin_budget`]).
pub fn recv_spinning(sock: BorrowedFd<'_>, spin: Duration) -> Result<Received> {
    if !spin.is_zero() {
        if let Some(m) = poll_for(sock, spin)? {
            return Ok(m);
        }
    }
    // A blocking receive always gives a message or the end (never "none yet").
    with_buffer(|buf| recv_into(sock, buf, None))
        .and_then(|m| m.ok_or_else(|| Error::from(ErrorKind::WouldBlock)))
}

/// A message if one arrives within `spin` (polling without blocking), else
/// `None`: the caller decides whether to block ([`recv`]) after.
pub fn poll_for(sock: BorrowedFd<'_>, spin: Duration) -> Result<Option<Received>> {
    let until = Instant::now() + spin;
    with_buffer(|buf| recv_into(sock, buf, Some(until)))
}

fn with_buffer<T>(f: impl Fn(&mut [u8]) -> T) -> T {
    // One zeroed receive buffer per thread, reused: a fresh 64 KiB buffer per
    // message cost more than the copy of the few bytes most messages have.
    thread_local! {
        static BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0u8; MAX_MESSAGE + 1]);
    }
    BUF.try_with(|b| match b.try_borrow_mut() {
        Ok(mut buf) => f(&mut buf),
        // Re-entered on this thread (cannot happen today): a buffer of its own.
        Err(_) => f(&mut vec![0u8; MAX_MESSAGE + 1]),
    })
    // The thread's locals are already destroyed (a call from a destructor
    // at thread or process exit): a buffer of its own.
    .unwrap_or_else(|_| f(&mut vec![0u8; MAX_MESSAGE + 1]))
}

/// How long a receiver that expects a message soon may poll for it:
/// `wanted`, or nothing on a machine with a single CPU (there the spinning
/// thread would only delay the sender it waits for).
pub fn spin_budget(wanted: Duration) -> Duration {
    if cpus() > 1 {
        wanted
    } else {
        Duration::ZERO
    }
}

/// The CPUs this process may run on, asked once (`available_parallelism`
/// reads cgroup files: tens of us).
pub fn cpus() -> usize {
    static CPUS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CPUS.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// One message; with `until`, polling without blocking until then and
/// `Ok(None)` if none came.
fn recv_into(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    until: Option<Instant>,
) -> Result<Option<Received>> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(4))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let wait = if until.is_some() {
        RecvFlags::DONTWAIT
    } else {
        RecvFlags::empty()
    };
    let r = loop {
        match rustix::net::recvmsg(
            sock,
            &mut [IoSliceMut::new(buf)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC | wait,
        ) {
            Err(rustix::io::Errno::INTR) => continue,
            Err(rustix::io::Errno::AGAIN) if until.is_some_and(|t| Instant::now() < t) => {
                // Yield rather than spin: a thread that polls must not keep
                // the one it waits for (the owner's, on a busy machine)
                // off the CPU; with nothing else to run, this returns at once.
                std::thread::yield_now();
                continue;
            }
            Err(rustix::io::Errno::AGAIN) if until.is_some() => return Ok(None),
            other => break other?,
        }
    };
    let mut fds: Vec<OwnedFd> = Vec::new();
    for m in control.drain() {
        if let RecvAncillaryMessage::ScmRights(it) = m {
            fds.extend(it.map(crate::fdnum::raise));
        }
    }
    if r.bytes == 0 && fds.is_empty() {
        return Ok(Some(None));
    }
    if r.flags.contains(ReturnFlags::TRUNC)
        || r.flags.contains(ReturnFlags::CTRUNC)
        || r.bytes > MAX_MESSAGE
    {
        return Err(Error::new(ErrorKind::InvalidData, "message too long"));
    }
    if fds.len() > 1 {
        return Err(Error::new(
            ErrorKind::InvalidData,
            format!("{} descriptors with one message", fds.len()),
        ));
    }
    Ok(Some(Some((buf[..r.bytes].to_vec(), fds.pop()))))
}

/// Wait until `fd` is readable or `timeout_ms` passes (`-1`: no limit);
/// true if readable (or hung up).
pub fn wait_readable(fd: BorrowedFd<'_>, timeout_ms: i32) -> Result<bool> {
    let mut p = [rustix::event::PollFd::new(
        &fd,
        rustix::event::PollFlags::IN,
    )];
    let t = (timeout_ms >= 0).then(|| rustix::time::Timespec {
        tv_sec: (timeout_ms / 1000) as i64,
        tv_nsec: (timeout_ms % 1000) as i64 * 1_000_000,
    });
    loop {
        match rustix::event::poll(&mut p, t.as_ref()) {
            Ok(n) => return Ok(n > 0),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    fn pair() -> (OwnedFd, OwnedFd) {
        rustix::net::socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )
        .unwrap()
    }

    #[test]
    fn a_message_and_its_descriptor_arrive_together() {
        let (a, b) = pair();
        let f = tempfile::tempfile().unwrap();
        send(a.as_fd(), b"hello", Some(f.as_fd())).unwrap();
        let (m, fd) = recv(b.as_fd()).unwrap().unwrap();
        assert_eq!(m, b"hello");
        let got = rustix::fs::fstat(fd.unwrap()).unwrap();
        let want = rustix::fs::fstat(&f).unwrap();
        assert_eq!((got.st_dev, got.st_ino), (want.st_dev, want.st_ino));
    }

    #[test]
    fn a_closed_peer_reads_as_none() {
        let (a, b) = pair();
        drop(a);
        assert!(recv(b.as_fd()).unwrap().is_none());
    }

    #[test]
    fn an_oversized_message_is_an_error() {
        let (a, b) = pair();
        send(a.as_fd(), &vec![1u8; MAX_MESSAGE + 10], None).unwrap();
        let e = recv(b.as_fd()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidData);
    }

    #[test]
    fn peer_credentials_are_this_process() {
        let (a, _b) = pair();
        let (pid, uid, _) = peer(a.as_fd()).unwrap();
        assert_eq!(pid as u32, std::process::id());
        assert_eq!(uid, rustix::process::getuid().as_raw());
    }
}
