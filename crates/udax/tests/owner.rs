//! The device's owner and its clients (issue 17, first slice;
//! docs/multiprocess.md): admission with the device fd, metadata calls
//! through the owner, hostile messages, idle exit. The owner runs on a
//! thread of the test; the clients talk to it over its real socket.

mod common;

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use udax::client::{Client, ConnectOptions};
use udax::device::{self, Device, OpenOptions as DevOpen};
use udax::fs::{Error, Fs, MkfsOptions};
use udax::owner::{Owner, ServeOptions, Stopper};
use udax::proto::{self, wire, Reply, Request};

/// A formatted device file on /dev/shm (a tmpfs device, mappable) and a
/// runtime directory for the socket; both removed on drop.
struct Setup {
    _dir: tempfile::TempDir,
    dev: PathBuf,
    run: PathBuf,
}

fn setup(mib: u64) -> Setup {
    let dir = tempfile::Builder::new()
        .prefix("udax-owner-")
        .tempdir_in("/dev/shm")
        .unwrap();
    let dev = dir.path().join("dev.img");
    let d: Arc<dyn Device> = device::open(
        dev.to_str().unwrap(),
        &DevOpen {
            create_size: Some(mib << 20),
        },
    )
    .unwrap();
    Fs::mkfs(&*d, &MkfsOptions::default()).unwrap();
    drop(d);
    let run = dir.path().join("run");
    Setup {
        _dir: dir,
        dev,
        run,
    }
}

/// An owner of `s`'s device serving on a thread; stopped and joined (its
/// result checked) on drop.
struct Serving {
    stop: Stopper,
    socket: PathBuf,
    thread: Option<std::thread::JoinHandle<udax::Result<()>>>,
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.stop.stop();
        if let Some(t) = self.thread.take() {
            let r = t.join().expect("owner thread panicked");
            if !std::thread::panicking() {
                r.expect("owner run");
            }
        }
    }
}

fn serve(s: &Setup, idle: Option<Duration>) -> Serving {
    let o = Owner::new(
        &s.dev,
        &ServeOptions {
            idle,
            runtime_dir: Some(s.run.clone()),
            ..Default::default()
        },
    )
    .expect("owner");
    let (stop, socket) = (o.stopper(), o.socket().to_path_buf());
    Serving {
        stop,
        socket,
        thread: Some(std::thread::spawn(move || o.run())),
    }
}

fn opts(s: &Setup, write: bool) -> ConnectOptions {
    ConnectOptions {
        write,
        runtime_dir: Some(s.run.clone()),
        ..Default::default()
    }
}

fn access_mode(fd: std::os::fd::BorrowedFd<'_>) -> rustix::fs::OFlags {
    rustix::fs::fcntl_getfl(fd).unwrap() & rustix::fs::OFlags::RWMODE
}

#[test]
fn mp_client_changes_metadata_through_the_owner_and_it_persists() {
    let _w = common::Watchdog::start(60, "owner round trips");
    let s = setup(64);
    let o = serve(&s, None);
    let c = Client::connect(&s.dev, &opts(&s, true)).unwrap();
    c.mkdir("/d", 0o755).unwrap();
    c.create("/d/a", 0o644).unwrap();
    c.create("/d/b", 0o600).unwrap();
    c.rename("/d/b", "/d/c").unwrap();
    assert!(matches!(c.create("/d/a", 0o644), Err(Error::Exists)));
    assert!(matches!(c.stat("/d/b"), Err(Error::NotFound)));
    let st = c.stat("/d/c").unwrap();
    assert!(st.is_file());
    assert_eq!(st.mode & 0o777, 0o600);
    let mut names: Vec<String> = c
        .read_dir("/d")
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    names.sort();
    assert_eq!(names, ["a", "c"]);
    c.unlink("/d/a").unwrap();
    assert!(matches!(c.rmdir("/d"), Err(Error::NotEmpty)));
    assert!(c.statfs().unwrap().free_blocks > 0);
    assert!(c.ping().unwrap() < Duration::from_secs(1));
    drop(c);
    drop(o);
    // The owner checkpointed and let go of the device: an embedded mount
    // sees what the client did.
    let d = device::open(s.dev.to_str().unwrap(), &DevOpen::default()).unwrap();
    let fs = Fs::mount(d).unwrap();
    assert!(fs.stat("/d/c").unwrap().is_file());
    assert!(matches!(fs.stat("/d/a"), Err(Error::NotFound)));
    fs.unmount().unwrap();
}

#[test]
fn mp_the_owner_holds_the_device_an_embedded_mount_is_refused() {
    let _w = common::Watchdog::start(60, "device lock");
    let s = setup(16);
    let _o = serve(&s, None);
    match device::open(s.dev.to_str().unwrap(), &DevOpen::default()) {
        Err(e) => assert_eq!(e.errno(), libc::EBUSY, "{e}"),
        Ok(d) => panic!("opened a served device: {:?}", d.info()),
    }
}

#[test]
fn mp_admission_hands_over_the_device_read_write_or_read_only() {
    let _w = common::Watchdog::start(60, "admission");
    let s = setup(16);
    let _o = serve(&s, None);
    let rw = Client::connect(&s.dev, &opts(&s, true)).unwrap();
    assert!(!rw.is_read_only());
    assert_eq!(access_mode(rw.device_fd()), rustix::fs::OFlags::RDWR);
    let ro = Client::connect(&s.dev, &opts(&s, false)).unwrap();
    assert!(ro.is_read_only());
    assert_eq!(access_mode(ro.device_fd()), rustix::fs::OFlags::RDONLY);
    // Both are the device file.
    let want = std::fs::metadata(&s.dev).unwrap();
    for c in [&rw, &ro] {
        let st = rustix::fs::fstat(c.device_fd()).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!((st.st_dev, st.st_ino), (want.dev(), want.ino()));
    }
}

#[test]
fn mp_no_owner_is_not_connected_with_advice() {
    let s = setup(16);
    match Client::connect(&s.dev, &opts(&s, true)) {
        Err(e @ Error::NotConnected(_)) => {
            assert_eq!(e.errno(), libc::ENOTCONN);
            assert!(e.to_string().contains("udax serve"), "{e}");
        }
        other => panic!("{other:?}"),
    }
}

/// A raw connection to the owner, for messages no client would send.
fn raw(o: &Serving) -> std::os::fd::OwnedFd {
    wire::connect(&o.socket).unwrap()
}

fn exchange(sock: &std::os::fd::OwnedFd, msg: &[u8]) -> Option<Reply> {
    wire::send(sock.as_fd(), msg, None).unwrap();
    let (m, _) = wire::recv(sock.as_fd()).unwrap()?;
    Some(Reply::decode(&m).unwrap().1)
}

#[test]
fn mp_hostile_messages_get_an_error_and_the_owner_keeps_serving() {
    let _w = common::Watchdog::start(60, "hostile messages");
    let s = setup(16);
    let o = serve(&s, None);
    let good = Client::connect(&s.dev, &opts(&s, true)).unwrap();
    let bad = raw(&o);
    let hello = Request::Hello {
        version: proto::VERSION,
        write: true,
    }
    .encode(1);
    assert!(matches!(exchange(&bad, &hello), Some(Reply::Hello { .. })));
    // Garbage, a truncated message, a bad version, an unknown kind, a path
    // with a NUL, an over-long message: each gets an error, and the
    // connection goes on.
    let mut wrong_version = Request::Ping.encode(2);
    wrong_version[4] = 9;
    let mut unknown = Request::Ping.encode(3);
    unknown[6] = 77;
    let mut nul = Request::Stat {
        path: b"/ab".to_vec(),
    }
    .encode(4);
    let n = nul.len();
    nul[n - 1] = 0;
    let msgs: Vec<Vec<u8>> = vec![
        b"garbage".to_vec(),
        hello[..10].to_vec(),
        wrong_version,
        unknown,
        nul,
        vec![0u8; proto::MAX_MESSAGE + 100],
    ];
    for m in &msgs {
        match exchange(&bad, m) {
            Some(Reply::Error { errno, .. }) => assert!(errno > 0),
            other => panic!("{} bytes: {other:?}", m.len()),
        }
    }
    assert_eq!(exchange(&bad, &Request::Ping.encode(9)), Some(Reply::Pong));
    // An empty datagram reads as the end of the connection (a
    // SOCK_SEQPACKET receiver cannot tell them apart): the owner closes it.
    assert_eq!(exchange(&bad, &[]), None);
    // The well-behaved client never noticed.
    good.mkdir("/still", 0o755).unwrap();
    assert!(good.stat("/still").unwrap().is_dir());
}

#[test]
fn mp_a_request_before_hello_is_refused_and_the_connection_closed() {
    let _w = common::Watchdog::start(60, "hello first");
    let s = setup(16);
    let o = serve(&s, None);
    let sock = raw(&o);
    match exchange(
        &sock,
        &Request::Stat {
            path: b"/".to_vec(),
        }
        .encode(1),
    ) {
        Some(Reply::Error { errno, .. }) => assert_eq!(errno, libc::EPROTO),
        other => panic!("{other:?}"),
    }
    // Closed: the next receive sees the end (or the send fails).
    let _ = wire::send(sock.as_fd(), &Request::Ping.encode(2), None);
    assert!(matches!(wire::recv(sock.as_fd()), Ok(None) | Err(_)));
}

#[test]
fn mp_the_owner_exits_when_idle_and_lets_go_of_the_device() {
    let _w = common::Watchdog::start(60, "idle exit");
    let s = setup(16);
    let o = Owner::new(
        &s.dev,
        &ServeOptions {
            idle: Some(Duration::from_millis(300)),
            runtime_dir: Some(s.run.clone()),
            ..Default::default()
        },
    )
    .unwrap();
    let socket = o.socket().to_path_buf();
    let t = std::thread::spawn(move || o.run());
    {
        let c = Client::connect(&s.dev, &opts(&s, true)).unwrap();
        // Connected for longer than the idle time: not idle.
        std::thread::sleep(Duration::from_millis(600));
        c.mkdir("/x", 0o755).unwrap();
    }
    t.join().unwrap().unwrap();
    assert!(!socket.exists(), "socket removed at exit");
    let d = device::open(s.dev.to_str().unwrap(), &DevOpen::default()).unwrap();
    let fs = Fs::mount(d).unwrap();
    assert!(fs.stat("/x").unwrap().is_dir());
    fs.unmount().unwrap();
}

#[test]
fn mp_a_directory_larger_than_one_message_is_listed_whole() {
    let _w = common::Watchdog::start(120, "paged read_dir");
    let s = setup(64);
    let o = serve(&s, None);
    let c = Client::connect(&s.dev, &opts(&s, true)).unwrap();
    c.mkdir("/big", 0o755).unwrap();
    // 200-byte names: ~211 bytes per entry, so 400 entries need 2 replies.
    let n = 400;
    for i in 0..n {
        c.create(&format!("/big/{i:0>200}"), 0o644).unwrap();
    }
    let got = c.read_dir("/big").unwrap();
    assert_eq!(got.len(), n);
    let mut names: Vec<&str> = got.iter().map(|e| e.name.as_str()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), n, "no entry twice");
    drop(c);
    drop(o);
}

#[test]
fn mp_a_copy_of_the_image_is_not_mistaken_for_the_served_device() {
    let _w = common::Watchdog::start(60, "uuid clash");
    let s = setup(16);
    let copy: PathBuf = s.dev.with_file_name("copy.img");
    std::fs::copy(&s.dev, &copy).unwrap();
    let _o = serve(&s, None);
    // Same UUID, so the same socket: the client sees the fd is not its file.
    match Client::connect(&copy, &opts(&s, true)) {
        Err(e @ Error::NotConnected(_)) => assert!(e.to_string().contains("same UUID"), "{e}"),
        other => panic!("{other:?}"),
    }
    // And a second owner for the copy refuses to take over the socket.
    let e = Owner::new(
        Path::new(&copy),
        &ServeOptions {
            idle: None,
            runtime_dir: Some(s.run.clone()),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert_eq!(e.errno(), libc::EBUSY, "{e}");
}

#[test]
fn mp_a_client_reads_file_data_straight_from_the_device_under_a_lease() {
    let _w = common::Watchdog::start(60, "lease reads");
    let s = setup(64);
    let _o = serve(&s, None);
    let w = Client::connect(&s.dev, &opts(&s, true)).unwrap();
    let r = Client::connect(&s.dev, &opts(&s, false)).unwrap();
    let f = w.open("/f", true, true, 0o644).unwrap();
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(f.write_at(&data, 0).unwrap(), data.len());
    // A hole in the middle.
    f.write_at(b"tail", 1 << 20).unwrap();
    let g = r.open("/f", false, false, 0).unwrap();
    assert_eq!(g.len().unwrap(), (1 << 20) + 4);
    let mut buf = vec![0u8; data.len()];
    assert_eq!(g.read_at(&mut buf, 0).unwrap(), data.len());
    assert_eq!(buf, data);
    let mut hole = vec![1u8; 4096];
    g.read_at(&mut hole, 512 << 10).unwrap();
    assert!(hole.iter().all(|&b| b == 0), "a hole reads as zeros");
    let mut t = [0u8; 10];
    assert_eq!(g.read_at(&mut t, 1 << 20).unwrap(), 4);
    assert_eq!(&t[..4], b"tail");
    // An overwrite in place changes no layout: the reader sees it at once,
    // with no recall.
    let before = r.recalls();
    f.write_at(b"XYZ", 10).unwrap();
    g.read_at(&mut t[..3], 10).unwrap();
    assert_eq!(&t[..3], b"XYZ");
    assert_eq!(r.recalls(), before);
    // Growth is a layout change: the reader's lease is recalled, and it
    // sees the new size.
    f.write_at(b"more", (1 << 20) + 4).unwrap();
    assert!(r.recalls() > before, "growth recalls the reader's lease");
    assert_eq!(g.len().unwrap(), (1 << 20) + 8);
}

#[test]
fn mp_truncate_by_one_client_recalls_the_others_lease_before_the_blocks_change() {
    // Blocks X frees are reused by Y at once; a reader of X with a stale
    // layout would see Y's bytes. It must see only X's bytes or zeros.
    let _w = common::Watchdog::start(120, "recall stress");
    let s = setup(16);
    let _o = serve(&s, None);
    let w = Client::connect(&s.dev, &opts(&s, true)).unwrap();
    let r = Client::connect(&s.dev, &opts(&s, false)).unwrap();
    let x = w.open("/x", true, true, 0o644).unwrap();
    let y = w.open("/y", true, true, 0o644).unwrap();
    let mb = 1 << 20;
    x.write_at(&vec![0xAA; mb], 0).unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let stop = stop.clone();
        let g = r.open("/x", false, false, 0).unwrap();
        // The reader holds a lease on X's first blocks before they change.
        let mut first = vec![0u8; mb];
        assert_eq!(g.read_at(&mut first, 0).unwrap(), mb);
        assert!(first.iter().all(|&b| b == 0xAA));
        std::thread::spawn(move || {
            let mut buf = vec![0u8; mb];
            let mut reads = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let n = g.read_at(&mut buf, 0).unwrap();
                if let Some(i) = buf[..n].iter().position(|&b| b != 0xAA && b != 0) {
                    panic!("read byte {:#x} at {i} of X: a stale layout", buf[i]);
                }
                reads += 1;
            }
            reads
        })
    };
    let t = std::time::Instant::now();
    let mut rounds = 0;
    while t.elapsed() < Duration::from_secs(3) {
        x.set_len(0).unwrap();
        y.write_at(&vec![0xEE; mb], 0).unwrap();
        y.set_len(0).unwrap();
        x.write_at(&vec![0xAA; mb], 0).unwrap();
        rounds += 1;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let reads = reader.join().expect("reader saw only X's bytes");
    assert!(reads > 10 && rounds > 10, "{reads} reads, {rounds} rounds");
    assert!(
        r.recalls() >= rounds,
        "{} recalls for {rounds} truncates",
        r.recalls()
    );
}

#[test]
fn mp_an_unlinked_file_lives_while_a_client_has_it_open() {
    let _w = common::Watchdog::start(60, "unlinked but open");
    let s = setup(64);
    let _o = serve(&s, None);
    let a = Client::connect(&s.dev, &opts(&s, true)).unwrap();
    let b = Client::connect(&s.dev, &opts(&s, true)).unwrap();
    let f = a.open("/gone", true, true, 0o644).unwrap();
    f.write_at(&vec![7u8; 1 << 20], 0).unwrap();
    let free0 = b.statfs().unwrap().free_blocks;
    b.unlink("/gone").unwrap();
    assert!(matches!(b.stat("/gone"), Err(Error::NotFound)));
    let mut buf = vec![0u8; 4096];
    f.read_at(&mut buf, 8192).unwrap();
    assert!(
        buf.iter().all(|&x| x == 7),
        "still readable after the unlink"
    );
    assert_eq!(
        b.statfs().unwrap().free_blocks,
        free0,
        "blocks kept while open"
    );
    drop(f);
    assert_eq!(
        b.statfs().unwrap().free_blocks,
        free0 + 256,
        "freed at the last close"
    );
}

#[test]
fn mp_a_client_that_does_not_answer_a_recall_is_cut_off() {
    let _w = common::Watchdog::start(60, "cut off");
    let s = setup(16);
    let o = Owner::new(
        &s.dev,
        &ServeOptions {
            idle: None,
            runtime_dir: Some(s.run.clone()),
            recall_timeout: Duration::from_millis(300),
        },
    )
    .unwrap();
    let (stop, socket) = (o.stopper(), o.socket().to_path_buf());
    let _o = Serving {
        stop,
        socket,
        thread: Some(std::thread::spawn(move || o.run())),
    };
    let good = Client::connect(&s.dev, &opts(&s, true)).unwrap();
    let f = good.open("/f", true, true, 0o644).unwrap();
    f.write_at(b"hello", 0).unwrap();
    // A client that registers a callback channel it never reads, and takes
    // a lease.
    let bad = raw(&_o);
    let hello = Request::Hello {
        version: proto::VERSION,
        write: false,
    };
    let Some(Reply::Hello { client, .. }) = exchange(&bad, &hello.encode(1)) else {
        panic!("no hello")
    };
    let (mine, theirs) = rustix::net::socketpair(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::SEQPACKET,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )
    .unwrap();
    wire::send(
        bad.as_fd(),
        &Request::Listen { client }.encode(2),
        Some(theirs.as_fd()),
    )
    .unwrap();
    let (m, _) = wire::recv(bad.as_fd()).unwrap().unwrap();
    assert_eq!(Reply::decode(&m).unwrap().1, Reply::Done);
    let open = Request::Open {
        path: b"/f".to_vec(),
        write: false,
        create: false,
        mode: 0,
    };
    let Some(Reply::Opened { handle, .. }) = exchange(&bad, &open.encode(3)) else {
        panic!("no open")
    };
    let lease = Request::Lease {
        handle,
        from_blk: 0,
    };
    assert!(matches!(
        exchange(&bad, &lease.encode(4)),
        Some(Reply::Layout { .. })
    ));
    // The truncate waits for the recall's bound, then goes on without it.
    let t = std::time::Instant::now();
    f.set_len(0).unwrap();
    assert!(
        t.elapsed() >= Duration::from_millis(250),
        "{:?}",
        t.elapsed()
    );
    // The silent client's connection is gone.
    let _ = wire::send(bad.as_fd(), &Request::Ping.encode(5), None);
    assert!(matches!(wire::recv(bad.as_fd()), Ok(None) | Err(_)));
    drop(mine);
    // The good client goes on.
    assert_eq!(f.len().unwrap(), 0);
}

#[test]
fn mp_when_the_owner_goes_away_a_clients_calls_fail_with_enotconn() {
    let _w = common::Watchdog::start(60, "owner gone");
    let s = setup(16);
    let o = serve(&s, None);
    let c = Client::connect(&s.dev, &opts(&s, true)).unwrap();
    c.mkdir("/d", 0o755).unwrap();
    drop(o); // stops the owner: its connections are shut
    for r in [
        c.mkdir("/e", 0o755),
        c.stat("/d").map(drop),
        c.ping().map(drop),
    ] {
        match r {
            Err(e @ Error::NotConnected(_)) => assert_eq!(e.errno(), libc::ENOTCONN),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn mp_a_client_overwrites_allocated_blocks_in_place_and_the_bytes_persist() {
    let _w = common::Watchdog::start(60, "in-place writes");
    let s = setup(64);
    let o = serve(&s, None);
    let w = Client::connect(&s.dev, &opts(&s, true)).unwrap();
    let r = Client::connect(&s.dev, &opts(&s, false)).unwrap();
    let f = w.open("/f", true, true, 0o644).unwrap();
    f.write_at(&vec![1u8; 64 << 10], 0).unwrap();
    let g = r.open("/f", false, false, 0).unwrap();
    let mut buf = vec![0u8; 64 << 10];
    g.read_at(&mut buf, 0).unwrap();
    let recalls = r.recalls();
    // Overwrites inside the file, across block boundaries: in place, no
    // layout change, so no recall of the reader's lease.
    for (i, off) in [0u64, 4090, 8192, 60_000].into_iter().enumerate() {
        let data = vec![10 + i as u8; 5000.min((64 << 10) - off as usize)];
        assert_eq!(f.write_at(&data, off).unwrap(), data.len());
        let mut back = vec![0u8; data.len()];
        g.read_at(&mut back, off).unwrap();
        assert_eq!(back, data, "the reader sees the overwrite at {off}");
    }
    assert_eq!(r.recalls(), recalls, "no recall for overwrites in place");
    // The modification time follows at fsync (and at close, or within a
    // second).
    let m0 = w.stat("/f").unwrap().mtime_ns;
    std::thread::sleep(Duration::from_millis(20));
    f.write_at(b"t", 5).unwrap();
    f.fsync().unwrap();
    let m1 = w.stat("/f").unwrap().mtime_ns;
    assert!(m1 > m0, "mtime {m0} -> {m1}");
    // A read-only handle cannot write, in place or through the owner.
    assert!(g.write_at(b"no", 0).is_err());
    let mut want = vec![1u8; 64 << 10];
    for (i, off) in [0usize, 4090, 8192, 60_000].into_iter().enumerate() {
        let n = 5000.min((64 << 10) - off);
        want[off..off + n].fill(10 + i as u8);
    }
    want[5] = b't';
    // In place means without the owner: with the owner gone, an overwrite
    // under the lease still lands (a write through the owner would fail).
    drop(o);
    assert_eq!(f.write_at(b"direct", 30_000).unwrap(), 6);
    want[30_000..30_006].copy_from_slice(b"direct");
    assert!(matches!(
        f.write_at(b"grow", 64 << 10),
        Err(Error::NotConnected(_))
    ));
    drop((f, g, w, r));
    let d = device::open(s.dev.to_str().unwrap(), &DevOpen::default()).unwrap();
    let fs = Fs::mount(d).unwrap();
    let mut got = vec![0u8; 64 << 10];
    let h = fs.open("/f", &udax::fs::OpenOptions::read_only()).unwrap();
    h.read_at(&mut got, 0).unwrap();
    assert!(
        got == want,
        "what the client wrote in place is on the device"
    );
    drop(h);
    fs.unmount().unwrap();
}

#[test]
fn mp_a_layout_larger_than_one_message_is_leased_whole() {
    // Every other block written: one extent per block, 3000 extents, more
    // than one Layout reply holds (~2600).
    let _w = common::Watchdog::start(120, "paged lease");
    let s = setup(64);
    let _o = serve(&s, None);
    let w = Client::connect(&s.dev, &opts(&s, true)).unwrap();
    let f = w.open("/sparse", true, true, 0o644).unwrap();
    let n = 3000u64;
    for i in 0..n {
        let b = vec![(i % 251) as u8 + 1; 4096];
        f.write_at(&b, 2 * i * 4096).unwrap();
    }
    let r = Client::connect(&s.dev, &opts(&s, false)).unwrap();
    let g = r.open("/sparse", false, false, 0).unwrap();
    assert_eq!(g.len().unwrap(), (2 * n - 1) * 4096);
    let mut all = vec![0u8; ((2 * n - 1) * 4096) as usize];
    assert_eq!(g.read_at(&mut all, 0).unwrap(), all.len());
    for (k, blk) in all.chunks(4096).enumerate() {
        let want = if k % 2 == 0 {
            (k as u64 / 2 % 251) as u8 + 1
        } else {
            0
        };
        assert!(blk.iter().all(|&x| x == want), "block {k}");
    }
}
