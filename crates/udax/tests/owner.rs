//! The device's owner and its clients (issue 17, first slice;
//! docs/multiprocess.md): admission with the device fd, metadata calls
//! through the owner, hostile messages, idle exit. The owner runs on a
//! thread of the test; the clients talk to it over its real socket.

mod common;

use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use udax::client::Client;
use udax::device::{self, OpenOptions as DevOpen};
use udax::fs::{Error, Fs};
use udax::owner::{Owner, ServeOptions};
use udax::proto::{self, wire, Reply, Request};

use common::free_for_data;
use common::serving::{opts, serve, setup, Serving};

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

/// A raw connection to the owner, admitted (`Hello` with write access).
fn raw_admitted(o: &Serving) -> std::os::fd::OwnedFd {
    let sock = raw(o);
    let hello = Request::Hello {
        version: proto::VERSION,
        write: true,
    }
    .encode(1);
    assert!(matches!(exchange(&sock, &hello), Some(Reply::Hello { .. })));
    sock
}

/// A call page asked for on the raw connection `sock`, and a second
/// descriptor of its memory to scribble on it with.
fn raw_page(sock: &std::os::fd::OwnedFd) -> (udax::proto::calls::CallPage, std::os::fd::OwnedFd) {
    wire::send(sock.as_fd(), &Request::Calls.encode(2), None).unwrap();
    let (m, fd) = wire::recv(sock.as_fd()).unwrap().unwrap();
    assert_eq!(Reply::decode(&m).unwrap().1, Reply::Done);
    let fd = fd.expect("the page's descriptor");
    let mine = rustix::io::dup(&fd).unwrap();
    (udax::proto::calls::CallPage::attach(fd).unwrap(), mine)
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
    wrong_version[4] = (proto::VERSION as u8).wrapping_add(1);
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
fn mp_calls_go_through_the_call_page_and_answer_as_on_the_socket() {
    let _w = common::Watchdog::start(60, "call page");
    let s = setup(16);
    let _o = serve(&s, None);
    let c = Client::connect(&s.dev, &opts(&s, true)).unwrap();
    let before = c.paged_requests();
    for i in 0..200 {
        c.ping().unwrap();
        let p = format!("/f{i}");
        c.create(&p, 0o644).unwrap();
        assert!(c.stat(&p).unwrap().is_file());
    }
    // An error comes back through the page too.
    assert!(matches!(c.mkdir("/f0", 0o755), Err(Error::Exists)));
    assert!(
        c.paged_requests() - before >= 400,
        "{} of the calls went through the page",
        c.paged_requests() - before
    );
    // A request with a descriptor still goes on the socket, in order with
    // the page's (a file's data written through the device fd the owner
    // handed out at hello, its size then seen by another client).
    let f = c.open("/f1", true, false, 0).unwrap();
    f.write_at(b"paged", 0).unwrap();
    drop(f);
    let other = Client::connect(&s.dev, &opts(&s, true)).unwrap();
    assert_eq!(other.stat("/f1").unwrap().size, 5);
    assert_eq!(other.read_dir("/").unwrap().len(), 200);
}

/// Write the 8-byte word `i` of the call page behind `fd`.
fn poke_word(fd: &std::os::fd::OwnedFd, i: u64, v: u64) {
    assert_eq!(
        rustix::io::pwrite(fd, &v.to_le_bytes(), i * 8).unwrap(),
        8,
        "word {i}"
    );
}

/// The reply to request `seq` on `page`, polled for (the owner rings the
/// socket only for a client that says it sleeps; this one never does).
fn page_reply(page: &udax::proto::calls::CallPage, seq: u64) -> Reply {
    let t = std::time::Instant::now();
    loop {
        if let Some(r) = page.reply(seq) {
            let m = r.expect("a reply that fits its area");
            return Reply::decode(&m).unwrap().1;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "no reply to {seq}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn mp_a_client_that_scribbles_on_its_call_page_gets_errors_and_the_owner_keeps_serving() {
    use udax::proto::calls;
    let _w = common::Watchdog::start(60, "hostile call page");
    let s = setup(16);
    let o = serve(&s, None);
    let good = Client::connect(&s.dev, &opts(&s, true)).unwrap();
    let bad = raw_admitted(&o);
    let (page, mine) = raw_page(&bad);
    // Its size is sealed: the owner's mapping cannot lose its pages.
    assert!(rustix::fs::ftruncate(&mine, 4096).is_err());
    let post = |seq: u64, msg: &[u8]| {
        if page.post(seq, msg) {
            wire::send(bad.as_fd(), calls::DOORBELL, None).unwrap();
        }
    };
    // Garbage on the page: an error, as on the socket.
    post(1, b"garbage, not a request");
    assert!(matches!(page_reply(&page, 1), Reply::Error { errno, .. } if errno > 0));
    // A length past the area, stored before the request's number: read
    // as an empty message, an error; nothing past the area is read.
    poke_word(&mine, 9, u64::MAX);
    poke_word(&mine, 8, 2);
    wire::send(bad.as_fd(), calls::DOORBELL, None).unwrap();
    assert!(matches!(page_reply(&page, 2), Reply::Error { errno, .. } if errno > 0));
    // The owner's own words scribbled over: it answers by its own count.
    poke_word(&mine, 16, 77);
    poke_word(&mine, 17, u64::MAX);
    post(3, &Request::Ping.encode(3));
    assert_eq!(page_reply(&page, 3), Reply::Pong);
    // A request past the area's size, asked on the socket as a page
    // could not hold it: an error there too, and the connection goes on.
    match exchange(&bad, &vec![0u8; calls::AREA + 8]) {
        Some(Reply::Error { errno, .. }) => assert!(errno > 0),
        other => panic!("{other:?}"),
    }
    post(4, &Request::Ping.encode(4));
    assert_eq!(page_reply(&page, 4), Reply::Pong);
    // The well-behaved client never noticed.
    good.mkdir("/still", 0o755).unwrap();
    assert!(good.stat("/still").unwrap().is_dir());
}

#[test]
fn mp_random_scribbles_on_a_call_page_never_stop_the_owner() {
    use udax::proto::calls;
    let _w = common::Watchdog::start(120, "random call page scribbles");
    let s = setup(16);
    let o = serve(&s, None);
    let good = Client::connect(&s.dev, &opts(&s, true)).unwrap();
    let bad = raw_admitted(&o);
    let (page, mine) = raw_page(&bad);
    // xorshift64*, a fixed seed: a failure repeats.
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = || {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    for round in 0..300u64 {
        // A few random words: the header lines, or the request area's
        // first bytes (a message's header), with numbers below 2^32.
        for _ in 0..1 + next() % 4 {
            let word = if next() % 2 == 0 {
                next() % 24
            } else {
                512 + next() % 8
            };
            let v = match next() % 4 {
                0 => u64::MAX,
                1 => next() % 64,
                _ => next() & 0xFFFF_FFFF,
            };
            poke_word(&mine, word, v);
        }
        // Published as a request (a number no scribble writes): whatever
        // its length and bytes say, the owner answers it.
        let scribbled = (1u64 << 36) + round;
        poke_word(&mine, 8, scribbled);
        wire::send(bad.as_fd(), calls::DOORBELL, None).unwrap();
        let t = std::time::Instant::now();
        while page.reply(scribbled).is_none() {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "round {round}: no answer"
            );
            std::thread::sleep(Duration::from_micros(200));
        }
        // Then a real call, numbered where no scribble reaches: answered.
        let seq = (1u64 << 40) + round;
        let ping = Request::Ping.encode(seq);
        if page.post(seq, &ping) {
            wire::send(bad.as_fd(), calls::DOORBELL, None).unwrap();
        }
        assert_eq!(page_reply(&page, seq), Reply::Pong, "round {round}");
        // Read the owner's rings (a scribbled "client sleeps" asks for
        // them), so that its sends never find the socket full.
        let mut b = [0u8; 64];
        while rustix::net::recv(&bad, &mut b, rustix::net::RecvFlags::DONTWAIT)
            .is_ok_and(|(n, _)| n > 0)
        {}
    }
    // The well-behaved client never noticed.
    good.mkdir("/after", 0o755).unwrap();
    assert!(good.stat("/after").unwrap().is_dir());
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
fn mp_a_listing_paged_through_the_owner_neither_misses_nor_repeats_entries_changed_between_pages() {
    let _w = common::Watchdog::start(120, "paged read_dir with changes between pages");
    let s = setup(64);
    let o = serve(&s, None);
    let c = Client::connect(&s.dev, &opts(&s, true)).unwrap();
    c.mkdir("/d", 0o755).unwrap();
    // 200-byte names, ~211 bytes per entry: ~290 fit one reply.
    let stay: Vec<String> = (0..400).map(|i| format!("s{i:0>199}")).collect();
    let churn: Vec<String> = (0..200).map(|i| format!("c{i:0>199}")).collect();
    for n in stay.iter().chain(&churn) {
        c.create(&format!("/d/{n}"), 0o644).unwrap();
    }
    let sock = raw(&o);
    let hello = Request::Hello {
        version: proto::VERSION,
        write: true,
    }
    .encode(1);
    assert!(matches!(exchange(&sock, &hello), Some(Reply::Hello { .. })));
    let mut listed: Vec<String> = Vec::new();
    let mut from = 0;
    let mut gone = 0;
    for page in 0u64.. {
        let req = Request::ReadDir {
            path: b"/d".to_vec(),
            from,
        }
        .encode(2 + page);
        // Each page comes with the names its walk looked up.
        let r = match exchange(&sock, &req) {
            Some(Reply::Walked { then, .. }) => Some(*then),
            r => r,
        };
        let Some(Reply::Entries { entries, next }) = r else {
            panic!("no entries");
        };
        listed.extend(
            entries
                .into_iter()
                .map(|e| String::from_utf8(e.name).unwrap()),
        );
        if page == 0 {
            // Between the first two replies, every churn name listed so far
            // goes and as many new names come.
            // (On this connection: the owner tells a lister of changes
            // made by others, and this raw one does not listen.)
            let mut id = 1000;
            let mut call = |r: Request| {
                id += 1;
                // (With what the changed path shows now, for a cache.)
                let r = match exchange(&sock, &r.encode(id)) {
                    Some(Reply::Changed { then, .. }) => Some(*then),
                    r => r,
                };
                assert_eq!(r, Some(Reply::Done));
            };
            for n in churn.iter().filter(|n| listed.contains(n)) {
                call(Request::Unlink {
                    path: format!("/d/{n}").into_bytes(),
                });
                gone += 1;
            }
            for i in 0..200 {
                call(Request::Create {
                    path: format!("/d/z{i:0>199}").into_bytes(),
                    mode: 0o644,
                });
            }
        }
        match next {
            Some(n) => from = n,
            None => break,
        }
        assert!(page < 100, "the listing never ended");
    }
    let mut seen = std::collections::HashSet::new();
    for n in &listed {
        assert!(seen.insert(n.clone()), "{} listed twice", &n[..8]);
    }
    for n in &stay {
        assert!(seen.contains(n), "{} missed", &n[..8]);
    }
    // The client's own listing is sorted by name, as Fs::read_dir.
    let names: Vec<String> = c
        .read_dir("/d")
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
    assert!(gone > 0, "no churn name in the first reply");
    assert_eq!(names.len(), 400 + 200 + 200 - gone);
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
fn mp_open_o_trunc_by_one_client_recalls_the_others_lease_before_the_blocks_are_reused() {
    let _w = common::Watchdog::start(60, "open(O_TRUNC) across clients");
    let s = setup(64);
    let _o = serve(&s, None);
    let a = Client::connect(&s.dev, &opts(&s, true)).unwrap();
    let b = Client::connect(&s.dev, &opts(&s, true)).unwrap();
    let fa = a.open("/t", true, true, 0o644).unwrap();
    fa.write_at(&vec![7u8; 64 << 10], 0).unwrap();
    let fb = b.open("/t", false, false, 0).unwrap();
    let mut buf = vec![0u8; 4096];
    assert_eq!(fb.read_at(&mut buf, 0).unwrap(), 4096, "B holds a lease");
    let before = b.recalls();
    let trunc = udax::fs::OpenOptions {
        write: true,
        truncate: true,
        ..Default::default()
    };
    let _t = a.open_with("/t", &trunc).unwrap();
    // The freed blocks go to another file at once.
    let x = a.open("/x", true, true, 0o644).unwrap();
    x.write_at(&vec![9u8; 64 << 10], 0).unwrap();
    let n = fb.read_at(&mut buf, 0).unwrap();
    assert_eq!(n, 0, "B read {n} bytes (byte {}) of an empty file", buf[0]);
    assert!(b.recalls() > before, "B's lease was not recalled");
    assert_eq!(fb.len().unwrap(), 0);
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
    // Its time goes now: the close changes nothing `stat` shows.
    f.fsync().unwrap();
    let free0 = free_for_data(&b.statfs().unwrap());
    b.unlink("/gone").unwrap();
    assert!(matches!(b.stat("/gone"), Err(Error::NotFound)));
    let mut buf = vec![0u8; 4096];
    f.read_at(&mut buf, 8192).unwrap();
    assert!(
        buf.iter().all(|&x| x == 7),
        "still readable after the unlink"
    );
    assert_eq!(
        free_for_data(&b.statfs().unwrap()),
        free0,
        "blocks kept while open"
    );
    let inodes = b.statfs().unwrap().inodes;
    let n = b.requests();
    drop(f);
    assert_eq!(
        free_for_data(&b.statfs().unwrap()),
        free0 + 256,
        "freed at the last close"
    );
    assert_eq!(b.statfs().unwrap().inodes, inodes - 1);
    // B's `statfs` read the totals the owner published before it answered
    // A's close: no round trip.
    assert_eq!(b.requests(), n, "statfs went to the owner");
}

#[test]
fn mp_a_close_no_other_process_can_see_is_not_waited_for_and_comes_before_the_clients_next_request()
{
    use udax::fs::locks::LockKind::Write;
    use udax::proto::LockScope::Posix;
    let _w = common::Watchdog::start(60, "closes not waited for");
    let s = setup(64);
    let _o = serve(&s, None);
    let a = Client::connect(&s.dev, &opts(&s, true)).unwrap();
    let b = Client::connect(&s.dev, &opts(&s, true)).unwrap();
    let f = a.open("/f", true, true, 0o644).unwrap();
    f.write_at(&vec![7u8; 1 << 20], 0).unwrap();
    // (Its close is waited for: its size changed since its open, as a
    // record of the change log says; this process's own changes are
    // among them.)
    drop(f);
    let free0 = free_for_data(&b.statfs().unwrap());
    let n = a.unanswered_requests();
    let g = a.open("/f", false, false, 0).unwrap();
    drop(g);
    assert_eq!(a.unanswered_requests(), n + 1, "the close was waited for");
    // A's next request comes after its close: the unlink finds the file
    // closed and frees its blocks before it returns.
    a.unlink("/f").unwrap();
    assert_eq!(
        free_for_data(&b.statfs().unwrap()),
        free0 + 256,
        "the blocks of a file unlinked after its close"
    );
    // A change of the file by another process since the open (it may have
    // been an unlink: the last close would free the blocks): waited for.
    let h = a.open("/h", true, true, 0o644).unwrap();
    b.set_permissions("/h", 0o600).unwrap();
    let n = a.unanswered_requests();
    drop(h);
    assert_eq!(a.unanswered_requests(), n, "a close after B's change");
    // A close after this process locked the file: waited for (it drops
    // the lock), so B gets the lock as soon as it returns.
    let l = a.open("/l", true, true, 0o644).unwrap();
    l.lock(Posix, Some(Write), 0, 100, false).unwrap();
    let lb = b.open("/l", true, false, 0).unwrap();
    assert!(lb.lock(Posix, Some(Write), 0, 100, false).is_err());
    drop(l);
    assert_eq!(a.unanswered_requests(), n, "a close of a locked file");
    lb.lock(Posix, Some(Write), 0, 100, false).unwrap();
    // A close that sends the time of in-place overwrites: waited for.
    let w = a.open("/h", true, false, 0).unwrap();
    w.write_at(b"x", 0).unwrap();
    drop(w);
    assert_eq!(a.unanswered_requests(), n, "a close with a time to send");
    // And the replies not waited for never confuse the ones waited for.
    for i in 0..50 {
        let p = format!("/m{i}");
        drop(a.open(&p, true, true, 0o644).unwrap());
        assert_eq!(a.stat(&p).unwrap().size, 0);
    }
    assert_eq!(a.unanswered_requests(), n + 50, "closes of new files");
}

#[test]
fn mp_a_client_that_does_not_answer_a_recall_is_cut_off() {
    let _w = common::Watchdog::start(60, "cut off");
    let s = setup(16);
    let _o = serve_cutting_off(&s);
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
        read: true,
        write: false,
        create: false,
        excl: false,
        trunc: false,
        nofollow: false,
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

/// When the owner goes away, no recall can reach its clients any more and
/// a new owner may give their files' blocks to other files: a client's
/// mappings stop showing the device as soon as it sees the connection end,
/// and it lets go of the device (a writable client was handed the owner's
/// own open of it, whose flock would keep a new owner from starting). A
/// page it had mapped faults (EFAULT in the kernel, SIGBUS for a load)
/// instead of showing whatever reuses the block; a private mapping keeps
/// the copies it made (its own data); its reads and writes fail.
#[test]
fn mp_when_the_owner_goes_away_a_clients_mappings_stop_showing_the_device() {
    let _w = common::Watchdog::start(60, "mappings at the owner's end");
    let s = setup(16);
    let o = serve(&s, None);
    let len = 256 << 10;
    let c = Client::connect(&s.dev, &opts(&s, true)).unwrap();
    let f = c.open("/f", true, true, 0o644).unwrap();
    f.write_at(&vec![0xA5; len], 0).unwrap();
    let old: Vec<(u64, u64)> = f.extents().unwrap().iter().map(|e| (e.1, e.2)).collect();
    let shared = f
        .mmap(0, len, udax::Prot::ReadWrite, udax::MapFlags::SHARED)
        .expect(UFFD);
    let private = f
        .mmap(0, len, udax::Prot::ReadWrite, udax::MapFlags::PRIVATE)
        .expect(UFFD);
    let at = 8 * 4096;
    assert_eq!(
        common::kernel_load(shared.as_ptr().wrapping_add(at), 64),
        Ok(vec![0xA5; 64])
    );
    assert_eq!(peek(private.as_ptr(), at), 0xA5);
    poke(private.as_ptr(), 4096, 0x11);
    drop(o); // stops the owner: its connections are shut
    let t = std::time::Instant::now();
    while !c.is_closed() {
        assert!(t.elapsed() < Duration::from_secs(10), "the end not seen");
        std::thread::sleep(Duration::from_millis(5));
    }
    let gone =
        |m: &udax::client::RemoteMapping| common::kernel_load(m.as_ptr().wrapping_add(at), 64);
    assert_eq!(gone(&shared), Err(libc::EFAULT), "the shared mapping");
    assert_eq!(gone(&private), Err(libc::EFAULT), "the private one");
    assert_eq!(peek(private.as_ptr(), 4096), 0x11, "its own copy");
    assert_eq!(peek(private.as_ptr(), 4097), 0xA5, "its own copy");
    poke(private.as_ptr(), 4098, 0x22);
    assert_eq!(peek(private.as_ptr(), 4098), 0x22, "its own copy");
    assert!(matches!(
        f.read_at(&mut [0u8; 8], 0),
        Err(Error::NotConnected(_))
    ));
    assert!(matches!(f.write_at(b"x", 0), Err(Error::NotConnected(_))));
    // A new owner starts while the client still has its file and mappings,
    // and gives the blocks to another file: nothing of it shows.
    let _o2 = serve(&s, None);
    let b = Client::connect(&s.dev, &opts(&s, true)).unwrap();
    b.unlink("/f").unwrap();
    let g = b.open("/g", true, true, 0o644).unwrap();
    g.write_at(&vec![0x5A; len], 0).unwrap();
    let reused = g
        .extents()
        .unwrap()
        .iter()
        .any(|e| old.iter().any(|&(d, n)| e.1 < d + n && d < e.1 + e.2));
    assert!(reused, "the new file got none of the old blocks: {old:?}");
    assert_eq!(gone(&shared), Err(libc::EFAULT));
    assert_eq!(gone(&private), Err(libc::EFAULT));
    assert_eq!(peek(private.as_ptr(), 4096), 0x11, "its own copy");
}

/// Every client holds the device lock with its owner (shared), a read-only
/// one too: while a client of an owner that is gone has not let go of the
/// device (here: a read-only client in a stopped process, which cannot see
/// the end), no new owner starts, so none reuses a block its mappings show.
/// Once it runs again it lets go, and a new owner starts.
#[test]
fn mp_a_stopped_read_only_client_of_a_gone_owner_keeps_a_new_one_from_starting_until_it_lets_go() {
    use std::io::{BufRead as _, Write as _};
    let _w = common::Watchdog::start(120, "a stopped client of a gone owner");
    let s = setup(16);
    let o = serve(&s, None);
    {
        let w = Client::connect(&s.dev, &opts(&s, true)).unwrap();
        let f = w.open("/f", true, true, 0o644).unwrap();
        f.write_at(&vec![0xC7; 64 << 10], 0).unwrap();
    }
    let mut child =
        common::serving::spawn_child(&s, "mp_child_read_only_client_mapping_a_file", &[]);
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    child_says(&mut lines, "ready");
    let pid = child.id();
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGSTOP) }, 0);
    wait_stopped(pid);
    drop(o); // stops the owner: the stopped client cannot see it
    let again = || {
        Owner::new(
            &s.dev,
            &ServeOptions {
                runtime_dir: Some(s.run.clone()),
                ..Default::default()
            },
        )
    };
    match again() {
        Err(e) => assert_eq!(e.errno(), libc::EBUSY, "{e}"),
        Ok(_) => panic!("a new owner started while an old client maps the device"),
    }
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGCONT) }, 0);
    let _o2 = serve(&s, None);
    writeln!(stdin, "go").unwrap();
    stdin.flush().unwrap();
    assert_eq!(
        child_says(&mut lines, "gone"),
        [1],
        "its mapping still shows the device"
    );
    let b = Client::connect(&s.dev, &opts(&s, false)).unwrap();
    let mut got = [0u8; 4];
    b.open("/f", false, false, 0)
        .unwrap()
        .read_at(&mut got, 0)
        .unwrap();
    assert_eq!(got, [0xC7; 4]);
    let _ = child.wait();
}

/// The child of
/// `mp_a_stopped_read_only_client_of_a_gone_owner_keeps_a_new_one_from_starting_until_it_lets_go`:
/// a read-only client that maps `/f` and reads it, says "ready", waits for
/// a line, then says whether its mapping faults ("gone 1") and exits.
#[test]
#[ignore = "run as a child process by mp_a_stopped_read_only_client_of_a_gone_owner_keeps_a_new_one_from_starting_until_it_lets_go"]
fn mp_child_read_only_client_mapping_a_file() {
    use std::io::{BufRead as _, Write as _};
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes a signal number and no pointer:
    // a test aborted while this child is stopped leaves it no orphan.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    let dev = std::env::var("UDAX_TEST_DEV").expect("UDAX_TEST_DEV");
    let run = std::env::var("UDAX_TEST_RUN").expect("UDAX_TEST_RUN");
    let c = Client::connect(
        Path::new(&dev),
        &udax::client::ConnectOptions {
            write: false,
            runtime_dir: Some(PathBuf::from(run)),
            ..Default::default()
        },
    )
    .unwrap();
    let f = c.open("/f", false, false, 0).unwrap();
    let m = f
        .mmap(0, 64 << 10, udax::Prot::Read, udax::MapFlags::SHARED)
        .expect(UFFD);
    assert_eq!(peek(m.as_ptr(), 4096), 0xC7);
    eprintln!("ready");
    std::io::stderr().flush().unwrap();
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).unwrap();
    let gone = common::kernel_load(m.as_ptr().wrapping_add(4096), 8).is_err();
    eprintln!("gone {}", u8::from(gone));
    std::io::stderr().flush().unwrap();
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
    // In place means without the owner: an overwrite under the lease sends
    // no request (a growing write does).
    let sent = w.requests();
    assert_eq!(f.write_at(b"direct", 30_000).unwrap(), 6);
    want[30_000..30_006].copy_from_slice(b"direct");
    assert_eq!(w.requests(), sent, "an overwrite in place asked the owner");
    // Once the owner is gone, no write lands: no recall could reach the
    // lease any more (`mp_when_the_owner_goes_away_...`).
    drop(o);
    let t = std::time::Instant::now();
    while !w.is_closed() {
        assert!(t.elapsed() < Duration::from_secs(10), "the end not seen");
        std::thread::sleep(Duration::from_millis(5));
    }
    for (data, off) in [(&b"late"[..], 40_000), (b"grow", 64 << 10)] {
        assert!(matches!(f.write_at(data, off), Err(Error::NotConnected(_))));
    }
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

// ---- mmap in clients (SPEC M rules across processes) ----
//
// Each client has its own fault engine state (entries, regions, pins), as
// two processes would; the test process plays both (the engine's
// userfaultfd is per process, so this needs root as every mmap test does).

/// One byte of a mapping, loaded by this thread.
fn peek(p: *const u8, off: usize) -> u8 {
    // SAFETY: callers pass a live udax mapping and an offset inside the
    // file's size (a fault there resolves; it never raises SIGBUS).
    unsafe { std::ptr::read_volatile(p.add(off)) }
}

/// Store one byte into a writable mapping.
fn poke(p: *mut u8, off: usize, v: u8) {
    // SAFETY: as for `peek`, on a writable mapping.
    unsafe { std::ptr::write_volatile(p.add(off), v) }
}

const UFFD: &str = "mmap (the fault engine needs userfaultfd; run as root)";

#[test]
fn m3_a_clients_mapping_of_a_hole_sees_another_clients_write_there() {
    let _w = common::Watchdog::start(60, "hole mapping across clients");
    let s = setup(64);
    let _o = serve(&s, None);
    let a = Client::connect(&s.dev, &opts(&s, true)).unwrap();
    let b = Client::connect(&s.dev, &opts(&s, true)).unwrap();
    let fa = a.open("/h", true, true, 0o644).unwrap();
    fa.set_len(4 << 20).unwrap();
    let m = fa
        .mmap(0, 4 << 20, udax::Prot::Read, udax::MapFlags::SHARED)
        .expect(UFFD);
    // A reads the hole: the zero page.
    assert_eq!(peek(m.as_ptr(), (1 << 20) + 3), 0);
    assert_eq!(m.device_block_of(1 << 20), None, "a hole has no block");
    let before = a.recalls();
    // B writes into the hole (the owner allocates, recalls A's lease first).
    let fb = b.open("/h", true, false, 0).unwrap();
    fb.write_at(b"hello", (1 << 20) + 1).unwrap();
    assert!(a.recalls() > before, "A's lease was not recalled");
    // A's zero page is gone: A sees B's bytes through its mapping.
    let got: Vec<u8> = (0..7).map(|i| peek(m.as_ptr(), (1 << 20) + i)).collect();
    assert_eq!(got, b"\0hello\0");
    assert!(m.device_block_of(1 << 20).is_some());
}

#[test]
fn m3_a_write_into_a_hole_recalls_the_other_clients_not_the_writer_which_drops_its_own_first() {
    let _w = common::Watchdog::start(60, "the writer's own lease");
    let s = setup(64);
    let _o = serve(&s, None);
    let a = Client::connect(&s.dev, &opts(&s, true)).unwrap();
    let b = Client::connect(&s.dev, &opts(&s, true)).unwrap();
    let fa = a.open("/w", true, true, 0o644).unwrap();
    fa.set_len(4 << 20).unwrap();
    let ma = fa
        .mmap(0, 4 << 20, udax::Prot::Read, udax::MapFlags::SHARED)
        .expect(UFFD);
    let fb = b.open("/w", false, false, 0).unwrap();
    let mut buf = [9u8; 8];
    // Both read the hole under their leases; A's mapping shows the zero page.
    fa.read_at(&mut buf, 1 << 20).unwrap();
    assert_eq!(buf, [0; 8]);
    fb.read_at(&mut buf, 1 << 20).unwrap();
    assert_eq!(buf, [0; 8]);
    assert_eq!(peek(ma.as_ptr(), (1 << 20) + 1), 0);
    let (a0, b0) = (a.recalls(), b.recalls());
    // A writes into the hole: the owner recalls B's lease, not A's (A did
    // what the recall would have, first).
    fa.write_at(b"hello", (1 << 20) + 1).unwrap();
    assert_eq!(a.recalls(), a0, "the writer was recalled");
    assert!(b.recalls() > b0, "the other holder was not recalled");
    // Every view sees the bytes: A's read, A's mapping (its zero page
    // gone), B's read.
    fa.read_at(&mut buf, 1 << 20).unwrap();
    assert_eq!(&buf, b"\0hello\0\0");
    let got: Vec<u8> = (0..7).map(|i| peek(ma.as_ptr(), (1 << 20) + i)).collect();
    assert_eq!(got, b"\0hello\0");
    fb.read_at(&mut buf, 1 << 20).unwrap();
    assert_eq!(&buf, b"\0hello\0\0");
}

#[test]
fn m3_threads_of_the_writing_client_never_read_a_hole_its_write_has_filled() {
    use std::sync::atomic::{AtomicU64, Ordering};
    let _w = common::Watchdog::start(120, "a writer's own threads");
    let s = setup(64);
    let _o = serve(&s, None);
    let a = Client::connect(&s.dev, &opts(&s, true)).unwrap();
    let f = Arc::new(a.open("/r", true, true, 0o644).unwrap());
    const BLOCKS: u64 = 256;
    f.set_len(BLOCKS * 4096).unwrap();
    let m = f
        .mmap(
            0,
            (BLOCKS * 4096) as usize,
            udax::Prot::Read,
            udax::MapFlags::SHARED,
        )
        .expect(UFFD);
    let base = m.as_ptr() as usize;
    // Blocks written so far (each filled with its number + 1), published
    // only after its write returned.
    let done = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = (0..2)
        .map(|r| {
            let (f, done) = (f.clone(), done.clone());
            std::thread::spawn(move || {
                let mut buf = [0u8; 16];
                let mut checks = 0u64;
                loop {
                    // ORDERING: Acquire: pairs with the writer's Release.
                    let d = done.load(Ordering::Acquire);
                    if d > 0 {
                        // The block just written, and one written earlier.
                        for blk in [d - 1, (d - 1) * 7 % d] {
                            let want = (blk + 1) as u8;
                            if r == 0 {
                                f.read_at(&mut buf, blk * 4096 + 100).unwrap();
                                assert_eq!(buf, [want; 16], "read of block {blk}");
                            } else {
                                let got = peek(base as *mut u8, (blk * 4096 + 100) as usize);
                                assert_eq!(got, want, "load of block {blk}");
                            }
                            checks += 1;
                        }
                    }
                    if d == BLOCKS {
                        return checks;
                    }
                }
            })
        })
        .collect();
    for blk in 0..BLOCKS {
        f.write_at(&[(blk + 1) as u8; 4096], blk * 4096).unwrap();
        // ORDERING: Release: the block's bytes are written before this.
        done.store(blk + 1, Ordering::Release);
    }
    for r in readers {
        assert!(r.join().unwrap() > 0);
    }
    drop(m);
}

#[test]
fn m2_a_store_in_one_clients_mapping_allocates_through_the_owner_and_others_see_it() {
    let _w = common::Watchdog::start(60, "store into a hole across clients");
    let s = setup(64);
    let o = serve(&s, None);
    let a = Client::connect(&s.dev, &opts(&s, true)).unwrap();
    let b = Client::connect(&s.dev, &opts(&s, true)).unwrap();
    let fa = a.open("/s", true, true, 0o644).unwrap();
    fa.set_len(8 << 20).unwrap();
    let fb = b.open("/s", false, false, 0).unwrap();
    let ma = fa
        .mmap(0, 8 << 20, udax::Prot::ReadWrite, udax::MapFlags::SHARED)
        .expect(UFFD);
    let mb = fb
        .mmap(0, 8 << 20, udax::Prot::Read, udax::MapFlags::SHARED)
        .unwrap();
    let at = 10 * 4096 + 100;
    // B shows the zero page there first.
    assert_eq!(peek(mb.as_ptr(), at), 0);
    // A's store into the hole: A's fault asks the owner for a block, the
    // owner recalls B (its zero page goes), then A's store lands.
    poke(ma.as_ptr(), at, 0x5A);
    assert_eq!(peek(ma.as_ptr(), at), 0x5A);
    assert_eq!(peek(mb.as_ptr(), at), 0x5A, "B still shows the zero page");
    assert_eq!(ma.device_block_of(at), mb.device_block_of(at));
    // Stores to the block now allocated need no owner: B sees them at once.
    for i in 0..64 {
        poke(ma.as_ptr(), at + 1 + i, i as u8);
    }
    for i in 0..64 {
        assert_eq!(peek(mb.as_ptr(), at + 1 + i), i as u8);
    }
    let mut buf = [0u8; 2];
    fb.read_at(&mut buf, at as u64).unwrap();
    assert_eq!(buf, [0x5A, 0]);
    // A store in a 2 MiB-aligned hole of its own chunk, then persistence.
    poke(ma.as_ptr(), (4 << 20) + 7, 0x77);
    ma.msync(0, 8 << 20).unwrap();
    fa.fsync().unwrap();
    drop((ma, mb, fa, fb, a, b));
    drop(o);
    let d = device::open(s.dev.to_str().unwrap(), &DevOpen::default()).unwrap();
    let fs = Fs::mount(d).unwrap();
    let f = fs.open("/s", &Default::default()).unwrap();
    let mut got = [0u8; 1];
    f.read_at(&mut got, at as u64).unwrap();
    assert_eq!(got, [0x5A]);
    f.read_at(&mut got, (4 << 20) + 7).unwrap();
    assert_eq!(got, [0x77]);
    assert_eq!(f.len(), 8 << 20);
}

#[test]
fn m5_truncate_in_one_client_faults_past_the_new_end_in_anothers_mapping() {
    let _w = common::Watchdog::start(60, "truncate across clients");
    let s = setup(64);
    let _o = serve(&s, None);
    let a = Client::connect(&s.dev, &opts(&s, true)).unwrap();
    let b = Client::connect(&s.dev, &opts(&s, false)).unwrap();
    let fa = a.open("/t", true, true, 0o644).unwrap();
    fa.write_at(&vec![0xC3; 2 << 20], 0).unwrap();
    let fb = b.open("/t", false, false, 0).unwrap();
    let m = fb
        .mmap(0, 2 << 20, udax::Prot::Read, udax::MapFlags::SHARED)
        .expect(UFFD);
    let p300 = 300 * 4096;
    assert_eq!(
        common::kernel_load(m.as_ptr().wrapping_add(p300), 64),
        Ok(vec![0xC3; 64])
    );
    fa.set_len(1 << 20).unwrap();
    // Past the new end: the access that would raise SIGBUS gets EFAULT in
    // the kernel; inside it the data is still there.
    assert_eq!(
        common::kernel_load(m.as_ptr().wrapping_add(p300), 64),
        Err(libc::EFAULT)
    );
    assert_eq!(
        common::kernel_load(m.as_ptr().wrapping_add(4096), 64),
        Ok(vec![0xC3; 64])
    );
    // Growing it again makes the pages accessible (zeros: a hole).
    fa.set_len(2 << 20).unwrap();
    assert_eq!(
        common::kernel_load(m.as_ptr().wrapping_add(p300), 64),
        Ok(vec![0; 64])
    );
}

/// A client's small mapping of one extent is shown whole when made (no
/// placeholder, no fault): another client's truncate must still reach it
/// through the recall, and the pages past the new end fault (EFAULT for the
/// kernel, as SIGBUS for a user access).
#[test]
fn m5_a_clients_small_mapping_shown_whole_is_cut_by_another_clients_truncate() {
    let _w = common::Watchdog::start(60, "truncate of a whole mapping across clients");
    let s = setup(64);
    let _o = serve(&s, None);
    let a = Client::connect(&s.dev, &opts(&s, true)).unwrap();
    let b = Client::connect(&s.dev, &opts(&s, true)).unwrap();
    let fa = a.open("/w", true, true, 0o644).unwrap();
    fa.write_at(&vec![0x3C; 64 << 10], 0).unwrap();
    let fb = b.open("/w", true, false, 0).unwrap();
    let whole = || b.dax_stats().map_or(0, |st| st.whole_maps);
    let w0 = whole();
    let m = fb
        .mmap(0, 64 << 10, udax::Prot::ReadWrite, udax::MapFlags::SHARED)
        .expect(UFFD);
    assert_eq!(whole(), w0 + 1, "shown whole when made");
    let p12 = 12 * 4096;
    assert_eq!(
        common::kernel_load(m.as_ptr().wrapping_add(p12), 16),
        Ok(vec![0x3C; 16])
    );
    fa.set_len(8 * 4096).unwrap();
    assert_eq!(
        common::kernel_load(m.as_ptr().wrapping_add(p12), 16),
        Err(libc::EFAULT),
        "a page past the new end still shows the freed block"
    );
    assert_eq!(
        common::kernel_load(m.as_ptr().wrapping_add(4096), 16),
        Ok(vec![0x3C; 16])
    );
}

#[test]
fn m12_a_truncate_waits_for_another_clients_pin() {
    let _w = common::Watchdog::start(60, "truncate vs a pin in another client");
    let s = setup(64);
    let _o = serve(&s, None);
    let a = Client::connect(&s.dev, &opts(&s, true)).unwrap();
    let b = Client::connect(&s.dev, &opts(&s, true)).unwrap();
    let fa = a.open("/p", true, true, 0o644).unwrap();
    fa.write_at(&vec![1u8; 1 << 20], 0).unwrap();
    let fb = b.open("/p", true, false, 0).unwrap();
    let m = fb
        .mmap(0, 1 << 20, udax::Prot::ReadWrite, udax::MapFlags::SHARED)
        .expect(UFFD);
    let pin = m.pin(100 * 4096, 4096, true).unwrap();
    let t0 = std::time::Instant::now();
    let truncate = std::thread::spawn(move || {
        let r = fa.set_len(0);
        (r, std::time::Instant::now())
    });
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !truncate.is_finished(),
        "the truncate did not wait for the pin"
    );
    let released = std::time::Instant::now();
    drop(pin);
    let (r, done) = truncate.join().unwrap();
    r.expect("truncate after the pin went");
    assert!(done >= released, "finished before the pin was dropped");
    assert!(done - t0 < Duration::from_secs(8));
    assert_eq!(fb.len().unwrap(), 0);
}

#[test]
fn m8_a_private_mapping_in_a_client_keeps_its_copy() {
    let _w = common::Watchdog::start(60, "private mapping in a client");
    let s = setup(64);
    let _o = serve(&s, None);
    let a = Client::connect(&s.dev, &opts(&s, true)).unwrap();
    let b = Client::connect(&s.dev, &opts(&s, false)).unwrap();
    let fa = a.open("/v", true, true, 0o644).unwrap();
    fa.write_at(&vec![9u8; 64 << 10], 0).unwrap();
    let fb = b.open("/v", false, false, 0).unwrap();
    let m = fb
        .mmap(0, 64 << 10, udax::Prot::ReadWrite, udax::MapFlags::PRIVATE)
        .expect(UFFD);
    assert_eq!(peek(m.as_ptr(), 5), 9);
    poke(m.as_ptr(), 5, 0xEE);
    assert_eq!(peek(m.as_ptr(), 5), 0xEE);
    let mut got = [0u8; 1];
    fa.read_at(&mut got, 5).unwrap();
    assert_eq!(got, [9], "a private store reached the file");
    // A shared store by A shows in B's private mapping where B has no copy.
    fa.write_at(&[3u8], 4096 * 3).unwrap();
    assert_eq!(peek(m.as_ptr(), 4096 * 3), 3);
    // A shared writable mapping needs write access.
    assert!(matches!(
        fb.mmap(0, 4096, udax::Prot::ReadWrite, udax::MapFlags::SHARED),
        Err(Error::Access(_))
    ));
}

/// `read(2)` from a pipe into `dst`: the kernel stores `n` bytes of `v`
/// into a mapping. The bytes stored, or the errno (EFAULT where a user
/// store would raise SIGBUS).
fn kernel_store(dst: *mut u8, n: usize, v: u8) -> Result<usize, i32> {
    let (r, w) = common::pipe();
    let data = vec![v; n];
    // SAFETY: the write reads `data`; the read stores into `dst`, `n` bytes
    // of a live mapping owned by the caller (EFAULT, not a crash, where
    // they cannot be resolved); both fds are ours and closed.
    unsafe {
        assert_eq!(libc::write(w, data.as_ptr().cast(), n), n as isize);
        let k = libc::read(r, dst.cast(), n);
        let e = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
        libc::close(r);
        libc::close(w);
        if k < 0 {
            Err(e)
        } else {
            Ok(k as usize)
        }
    }
}

#[test]
fn m5_stress_stores_in_one_client_race_truncates_and_reuse_in_another() {
    // A stores through its mapping of X while B truncates X, fills Y (which
    // reuses X's freed blocks at once) and grows X again. A store through a
    // stale mapping would land in Y: Y must read back exactly what B wrote.
    let _w = common::Watchdog::start(120, "stores vs truncates across clients");
    let s = setup(16);
    let _o = serve(&s, None);
    let a = Client::connect(&s.dev, &opts(&s, true)).unwrap();
    let b = Client::connect(&s.dev, &opts(&s, true)).unwrap();
    let mb = 1 << 20;
    let fa = a.open("/x", true, true, 0o644).unwrap();
    fa.set_len(mb as u64).unwrap();
    let m = fa
        .mmap(0, mb, udax::Prot::ReadWrite, udax::MapFlags::SHARED)
        .expect(UFFD);
    let base = m.as_ptr() as usize;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let storer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let (mut ok, mut fault, mut page) = (0u64, 0u64, 0usize);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                page = (page + 37) % 256;
                match kernel_store((base + page * 4096) as *mut u8, 4096, 0xAA) {
                    Ok(_) => ok += 1,
                    Err(libc::EFAULT) => fault += 1,
                    Err(e) => panic!("store: errno {e}"),
                }
            }
            (ok, fault)
        })
    };
    let x = b.open("/x", true, false, 0).unwrap();
    let y = b.open("/y", true, true, 0o644).unwrap();
    let t = std::time::Instant::now();
    let mut rounds = 0;
    let mut buf = vec![0u8; mb];
    while t.elapsed() < Duration::from_secs(3) {
        x.set_len(0).unwrap();
        y.write_at(&vec![0xEE; mb], 0).unwrap();
        assert_eq!(y.read_at(&mut buf, 0).unwrap(), mb);
        if let Some(i) = buf.iter().position(|&v| v != 0xEE) {
            panic!(
                "Y byte {i} is {:#x}: a store through a stale mapping",
                buf[i]
            );
        }
        y.set_len(0).unwrap();
        x.set_len(mb as u64).unwrap();
        // Room for A's stores to land (allocating blocks through the owner).
        std::thread::sleep(Duration::from_millis(2));
        rounds += 1;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, fault) = storer.join().unwrap();
    eprintln!("{rounds} rounds, {ok} stores landed, {fault} faulted");
    assert!(rounds > 5, "{rounds} rounds");
    // Enough stores landed for the race to have been run (each one
    // allocates through the owner; a loaded machine lands fewer).
    assert!(ok > 20, "{ok} stores landed ({fault} faulted)");
    drop(m);
}

// ---- advisory locks across clients (fcntl record locks, OFD locks, flock) ----

use udax::fs::locks::LockKind::{Read, Write};
use udax::proto::LockScope::{Flock, Ofd, Posix};

fn errno(r: udax::Result<()>) -> i32 {
    r.expect_err("granted").errno()
}

#[test]
fn p_record_locks_conflict_across_clients_and_f_getlk_names_the_holder() {
    let _w = common::Watchdog::start(60, "record locks");
    let s = setup(64);
    let _o = serve(&s, None);
    let a = Client::connect(&s.dev, &opts(&s, true)).unwrap();
    let b = Client::connect(&s.dev, &opts(&s, true)).unwrap();
    let fa = a.open("/l", true, true, 0o644).unwrap();
    let fb = b.open("/l", true, false, 0).unwrap();
    fa.lock(Posix, Some(Write), 0, 100, false).unwrap();
    assert_eq!(
        errno(fb.lock(Posix, Some(Write), 50, 60, false)),
        libc::EAGAIN
    );
    assert_eq!(
        errno(fb.lock(Posix, Some(Read), 99, 200, false)),
        libc::EAGAIN
    );
    assert_eq!(
        fb.get_lock(Posix, Read, 0, u64::MAX).unwrap(),
        Some((Write, 0, 100, std::process::id() as i32))
    );
    fb.lock(Posix, Some(Read), 100, u64::MAX, false).unwrap();
    // Readers share: A may read-lock B's range, not write it.
    fa.lock(Posix, Some(Read), 200, 300, false).unwrap();
    assert_eq!(
        errno(fa.lock(Posix, Some(Write), 200, 300, false)),
        libc::EAGAIN
    );
    // A's own lock never conflicts with itself: downgrade in place.
    fa.lock(Posix, Some(Read), 0, 100, false).unwrap();
    fb.lock(Posix, Some(Read), 0, 10, false).unwrap();
    assert_eq!(fa.get_lock(Posix, Read, 0, 100).unwrap(), None);
    // A write lock needs the file open for writing (EBADF), as fcntl says.
    let ra = a.open("/l", false, false, 0).unwrap();
    assert_eq!(
        errno(ra.lock(Posix, Some(Write), 1000, 1001, false)),
        libc::EBADF
    );
}

#[test]
fn p_closing_any_descriptor_drops_the_process_posix_locks_not_ofd_or_flock() {
    let _w = common::Watchdog::start(60, "lock release on close");
    let s = setup(64);
    let _o = serve(&s, None);
    let a = Client::connect(&s.dev, &opts(&s, true)).unwrap();
    let b = Client::connect(&s.dev, &opts(&s, true)).unwrap();
    let f1 = a.open("/c", true, true, 0o644).unwrap();
    let f2 = a.open("/c", true, false, 0).unwrap();
    let fb = b.open("/c", true, false, 0).unwrap();
    f1.lock(Posix, Some(Write), 0, 10, false).unwrap();
    f1.lock(Ofd, Some(Write), 10, 20, false).unwrap();
    f1.lock(Flock, Some(Write), 0, 0, false).unwrap();
    // OFD locks conflict with the same process's POSIX locks.
    assert_eq!(
        errno(f2.lock(Posix, Some(Read), 15, 16, false)),
        libc::EAGAIN
    );
    assert_eq!(
        fb.get_lock(Ofd, Read, 10, 20).unwrap().map(|h| h.3),
        Some(-1)
    );
    // flock between two descriptions of one process conflicts too.
    assert_eq!(errno(f2.lock(Flock, Some(Read), 0, 0, false)), libc::EAGAIN);
    // Closing f2 (never used for the POSIX lock) drops A's POSIX locks on
    // the file; f1's OFD and flock locks stay.
    drop(f2);
    fb.lock(Posix, Some(Write), 0, 10, false).unwrap();
    assert_eq!(
        errno(fb.lock(Posix, Some(Write), 10, 20, false)),
        libc::EAGAIN
    );
    assert_eq!(errno(fb.lock(Flock, Some(Read), 0, 0, false)), libc::EAGAIN);
    drop(f1);
    fb.lock(Posix, Some(Write), 10, 20, false).unwrap();
    fb.lock(Flock, Some(Write), 0, 0, false).unwrap();
}

#[test]
fn p_setlkw_waits_for_the_holder_and_a_cycle_gets_edeadlk() {
    let _w = common::Watchdog::start(60, "blocking locks");
    let s = setup(64);
    let _o = serve(&s, None);
    let a = Client::connect(&s.dev, &opts(&s, true)).unwrap();
    let b = Client::connect(&s.dev, &opts(&s, true)).unwrap();
    let fa = Arc::new(a.open("/w", true, true, 0o644).unwrap());
    let fb = b.open("/w", true, false, 0).unwrap();
    fa.lock(Posix, Some(Write), 0, 10, false).unwrap();
    fb.lock(Posix, Some(Write), 10, 20, false).unwrap();
    // A waits for B's range...
    let waiter = {
        let fa = fa.clone();
        std::thread::spawn(move || fa.lock(Posix, Some(Write), 10, 20, true))
    };
    std::thread::sleep(Duration::from_millis(300));
    assert!(!waiter.is_finished(), "F_SETLKW did not wait");
    // ...so B waiting for A's would be a deadlock: EDEADLK, at once.
    assert_eq!(
        errno(fb.lock(Posix, Some(Write), 0, 10, true)),
        libc::EDEADLK
    );
    // B gives its range up: A's wait ends with the lock.
    fb.lock(Posix, None, 10, 20, false).unwrap();
    waiter.join().unwrap().expect("A's F_SETLKW");
    assert_eq!(
        fb.get_lock(Posix, Read, 15, 16)
            .unwrap()
            .map(|h| (h.0, h.1, h.2)),
        Some((Write, 0, 20))
    );
}

#[test]
fn p_a_dead_clients_locks_are_released() {
    // A client that dies (its socket closes, whatever killed it) holding
    // locks: the owner drops them.
    let _w = common::Watchdog::start(60, "locks of a dead client");
    let s = setup(64);
    let o = serve(&s, None);
    let b = Client::connect(&s.dev, &opts(&s, true)).unwrap();
    let fb = b.open("/d", true, true, 0o644).unwrap();
    let dead = raw(&o);
    let hello = Request::Hello {
        version: proto::VERSION,
        write: true,
    };
    assert!(matches!(
        exchange(&dead, &hello.encode(1)),
        Some(Reply::Hello { .. })
    ));
    let open = Request::Open {
        path: b"/d".to_vec(),
        read: true,
        write: true,
        create: false,
        excl: false,
        trunc: false,
        nofollow: false,
        mode: 0,
    };
    let Some(Reply::Opened { handle, .. }) = exchange(&dead, &open.encode(2)) else {
        panic!("open");
    };
    for (i, scope) in [proto::LockScope::Posix, proto::LockScope::Flock]
        .into_iter()
        .enumerate()
    {
        let lock = Request::Lock {
            handle,
            scope,
            kind: 2,
            start: 0,
            end: u64::MAX,
            wait: false,
        };
        assert!(matches!(
            exchange(&dead, &lock.encode(3 + i as u64)),
            Some(Reply::Done)
        ));
    }
    assert_eq!(errno(fb.lock(Posix, Some(Read), 0, 1, false)), libc::EAGAIN);
    assert_eq!(errno(fb.lock(Flock, Some(Read), 0, 0, false)), libc::EAGAIN);
    drop(dead);
    // The owner sees the end of the connection and drops its locks.
    let t = std::time::Instant::now();
    while fb.lock(Posix, Some(Write), 0, u64::MAX, false).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "the dead client's lock stays"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    fb.lock(Flock, Some(Write), 0, 0, false).unwrap();
}

// ---- the rest of the file API through the owner ----

#[test]
fn mp_a_client_links_renames_with_flags_chmods_and_sets_times() {
    let _w = common::Watchdog::start(60, "file API through the owner");
    let s = setup(64);
    let _o = serve(&s, None);
    let c = Client::connect(&s.dev, &opts(&s, true)).unwrap();
    let f = c.open("/a", true, true, 0o644).unwrap();
    f.write_at(b"hello", 0).unwrap();
    c.link("/a", "/b").unwrap();
    assert_eq!(c.stat("/b").unwrap().nlink, 2);
    assert_eq!(f.stat().unwrap().size, 5);
    assert!(matches!(
        c.rename2("/a", "/b", udax::fs::Rename::NoReplace),
        Err(Error::Exists)
    ));
    c.mkdir("/c", 0o755).unwrap();
    c.rename2("/a", "/c", udax::fs::Rename::Exchange).unwrap();
    assert!(c.stat("/a").unwrap().is_dir());
    assert_eq!(c.stat("/c").unwrap().size, 5);
    c.set_permissions("/c", 0o600).unwrap();
    c.set_times("/c", Some(1_000), Some(2_000)).unwrap();
    let st = c.stat("/c").unwrap();
    assert_eq!(
        (st.mode & 0o7777, st.atime_ns, st.mtime_ns),
        (0o600, 1_000, 2_000)
    );
    f.set_permissions(0o640).unwrap();
    f.set_times(None, Some(7_000)).unwrap();
    let st = f.stat().unwrap();
    assert_eq!(
        (st.mode & 0o7777, st.atime_ns, st.mtime_ns),
        (0o640, 1_000, 7_000)
    );
    c.sync().unwrap();
    // The file, unlinked, is still there through its handle.
    c.unlink("/b").unwrap();
    c.unlink("/c").unwrap();
    assert_eq!(f.stat().unwrap().nlink, 0);
}

#[test]
fn mp_an_o_tmpfile_of_a_client_gets_a_name_once_linkable() {
    let _w = common::Watchdog::start(60, "O_TMPFILE through the owner");
    let s = setup(64);
    let _o = serve(&s, None);
    let a = Client::connect(&s.dev, &opts(&s, true)).unwrap();
    let b = Client::connect(&s.dev, &opts(&s, true)).unwrap();
    let t = a.open_unnamed("/", 0o600, true).unwrap();
    t.write_at(b"staged", 0).unwrap();
    assert!(a.read_dir("/").unwrap().is_empty(), "no name yet");
    t.link("/named").unwrap();
    let g = b.open("/named", false, false, 0).unwrap();
    let mut buf = [0u8; 6];
    assert_eq!(g.read_at(&mut buf, 0).unwrap(), 6);
    assert_eq!(&buf, b"staged");
    let x = a.open_unnamed("/", 0o600, false).unwrap();
    assert!(matches!(x.link("/never"), Err(Error::NotFound)));
}

#[test]
fn mp_a_punch_in_one_client_zeroes_the_range_in_anothers_mapping() {
    let _w = common::Watchdog::start(60, "punch across clients");
    let s = setup(64);
    let _o = serve(&s, None);
    let a = Client::connect(&s.dev, &opts(&s, true)).unwrap();
    let b = Client::connect(&s.dev, &opts(&s, false)).unwrap();
    let fa = a.open("/p", true, true, 0o644).unwrap();
    fa.write_at(&vec![0x66; 1 << 20], 0).unwrap();
    let fb = b.open("/p", false, false, 0).unwrap();
    let m = fb
        .mmap(0, 1 << 20, udax::Prot::Read, udax::MapFlags::SHARED)
        .expect(UFFD);
    assert_eq!(peek(m.as_ptr(), 10 * 4096 + 1), 0x66);
    use udax::fs::falloc::{KEEP_SIZE, PUNCH_HOLE};
    fa.fallocate(PUNCH_HOLE | KEEP_SIZE, 10 * 4096, 4 * 4096)
        .unwrap();
    assert_eq!(
        peek(m.as_ptr(), 10 * 4096 + 1),
        0,
        "B still maps the freed block"
    );
    assert_eq!(peek(m.as_ptr(), 14 * 4096), 0x66);
    assert_eq!(m.device_block_of(11 * 4096), None, "a hole now");
    let holes: Vec<_> = fb
        .extents()
        .unwrap()
        .into_iter()
        .map(|(f, _, n, _)| (f, n))
        .collect();
    assert_eq!(holes, [(0, 10), (14, 242)]);
    assert_eq!(fb.len().unwrap(), 1 << 20);
}

#[test]
fn r1_a_clone_makes_the_source_shared_so_no_client_overwrites_it_in_place() {
    let _w = common::Watchdog::start(60, "clone across clients");
    let s = setup(64);
    let _o = serve(&s, None);
    let a = Client::connect(&s.dev, &opts(&s, true)).unwrap();
    let b = Client::connect(&s.dev, &opts(&s, true)).unwrap();
    let src = a.open("/src", true, true, 0o644).unwrap();
    src.write_at(&vec![1u8; 64 << 10], 0).unwrap();
    let dst = a.open("/dst", true, true, 0o644).unwrap();
    // B holds a lease on the source that shows its blocks its own.
    let bs = b.open("/src", true, false, 0).unwrap();
    let mut buf = vec![0u8; 64 << 10];
    bs.read_at(&mut buf, 0).unwrap();
    assert_eq!(a.clone_range(&src, 0, &dst, 0, 0).unwrap(), 64 << 10);
    // B's write to the source must not reach the shared blocks.
    bs.write_at(&vec![2u8; 4096], 0).unwrap();
    let bd = b.open("/dst", false, false, 0).unwrap();
    bd.read_at(&mut buf, 0).unwrap();
    assert!(buf.iter().all(|&x| x == 1), "the clone changed under it");
    bs.read_at(&mut buf[..4096], 0).unwrap();
    assert!(buf[..4096].iter().all(|&x| x == 2));
    assert!(bd.extents().unwrap().iter().any(|e| e.3), "shared blocks");
    // Dedupe: equal ranges are shared, different ones are not.
    let (n, differs) = a.dedupe_range(&src, 8192, &dst, 8192, 4096).unwrap();
    assert_eq!((n, differs), (4096, false));
    let (_, differs) = a.dedupe_range(&src, 0, &dst, 0, 4096).unwrap();
    assert!(differs);
}

/// fsx through the shim (seeds 4, 5, 9, 10): a store through a client's
/// mapping onto blocks two clones share. File F's blocks 8..12 are one
/// shared run on the device; F's own blocks 0..2 (earlier in the file) share
/// its second half, file G shares its first half. The faulting page's own
/// block is shared, so the store must copy the run, leaving G and F's
/// blocks 0..2 as they were.
#[test]
fn r1_a_mapped_store_onto_blocks_shared_with_an_earlier_offset_and_another_file_copies_them() {
    let _w = common::Watchdog::start(60, "mapped store onto cloned blocks");
    const B: usize = 4096;
    let s = setup(64);
    let _o = serve(&s, None);
    let a = Client::connect(&s.dev, &opts(&s, true)).unwrap();
    let f = a.open("/f", true, true, 0o644).unwrap();
    // Block i holds i + 1 in every byte.
    let data: Vec<u8> = (0..16 * B).map(|i| (i / B) as u8 + 1).collect();
    f.write_at(&data, 0).unwrap();
    let g = a.open("/g", true, true, 0o644).unwrap();
    assert_eq!(
        a.clone_range(&f, 8 * B as u64, &g, 0, 2 * B as u64)
            .unwrap(),
        2 * B as u64
    );
    assert_eq!(
        a.clone_range(&f, 10 * B as u64, &f, 0, 2 * B as u64)
            .unwrap(),
        2 * B as u64
    );
    // The layout the fault sees: blocks 8..12 one shared extent, and
    // block 0 (listed first) on its last two device blocks.
    let ext = f.extents().unwrap();
    let (_, d8, n8, sh8) = *ext.iter().find(|e| e.0 == 8).expect("an extent at block 8");
    assert!(n8 >= 4 && sh8, "blocks 8..12 are one shared run: {ext:?}");
    assert_eq!(ext[0], (0, d8 + 2, 2, true), "{ext:?}");
    let m = f
        .mmap(0, 16 * B, udax::Prot::ReadWrite, udax::MapFlags::SHARED)
        .expect(UFFD);
    for p in 8..12 {
        poke(m.as_ptr(), p * B + 5, 0xEE);
    }
    // Another client reads the other sharers from the device.
    let b = Client::connect(&s.dev, &opts(&s, false)).unwrap();
    let mut buf = vec![0u8; 2 * B];
    b.open("/g", false, false, 0)
        .unwrap()
        .read_at(&mut buf, 0)
        .unwrap();
    assert!(buf[..B].iter().all(|&x| x == 9), "G's block 0 changed");
    assert!(buf[B..].iter().all(|&x| x == 10), "G's block 1 changed");
    let bf = b.open("/f", false, false, 0).unwrap();
    bf.read_at(&mut buf, 0).unwrap();
    assert!(buf[..B].iter().all(|&x| x == 11), "F's block 0 changed");
    assert!(buf[B..].iter().all(|&x| x == 12), "F's block 1 changed");
    let mut page = vec![0u8; B];
    for p in 8..12 {
        bf.read_at(&mut page, (p * B) as u64).unwrap();
        assert_eq!(page[5], 0xEE, "the store to page {p} is lost");
        assert_eq!(page[4], p as u8 + 1, "page {p} copied wrong");
    }
    for p in 8..12 {
        assert_eq!(peek(m.as_ptr(), p * B + 5), 0xEE);
        let shared = d8 + (p as u64 - 8);
        assert_ne!(
            m.device_block_of(p * B),
            Some(shared),
            "page {p} not copied"
        );
    }
}

// ---- death of a client process ----

/// The body of `mp_kill_9_of_a_client_holding_a_mapping_pins_and_locks_leaves_nothing_held`,
/// run as its child process: a client that stores into a hole through its
/// mapping, pins a page, takes a record lock and a flock, says "ready" (on
/// stderr) and waits to be killed.
#[test]
#[ignore = "run as a child process by mp_kill_9_of_a_client_holding_a_mapping_pins_and_locks_leaves_nothing_held"]
fn mp_child_client_holding_a_mapping_pins_and_locks() {
    use std::io::Write as _;
    let c = common::serving::child_client();
    let f = c.open("/k", true, false, 0).unwrap();
    let m = f
        .mmap(0, 1 << 20, udax::Prot::ReadWrite, udax::MapFlags::SHARED)
        .expect(UFFD);
    poke(m.as_ptr(), 5 * 4096, 0xAB);
    let _pin = m.pin(5 * 4096, 4096, true).unwrap();
    f.lock(Posix, Some(Write), 0, 100, false).unwrap();
    f.lock(Flock, Some(Write), 0, 0, false).unwrap();
    // On stderr: the harness keeps a test's stdout to itself.
    eprintln!("ready");
    std::io::stderr().flush().unwrap();
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn mp_kill_9_of_a_client_holding_a_mapping_pins_and_locks_leaves_nothing_held() {
    use std::io::BufRead as _;
    let _w = common::Watchdog::start(90, "kill -9 of a client");
    let s = setup(64);
    let o = serve(&s, None);
    let b = Client::connect(&s.dev, &opts(&s, true)).unwrap();
    let f = b.open("/k", true, true, 0o644).unwrap();
    f.set_len(1 << 20).unwrap();
    let mut child =
        common::serving::spawn_child(&s, "mp_child_client_holding_a_mapping_pins_and_locks", &[]);
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    loop {
        match lines.next() {
            Some(Ok(l)) if l.trim() == "ready" => break,
            Some(Ok(_)) => continue,
            other => panic!("the child client did not get ready: {other:?}"),
        }
    }
    assert_eq!(errno(f.lock(Posix, Some(Read), 0, 1, false)), libc::EAGAIN);
    assert_eq!(errno(f.lock(Flock, Some(Read), 0, 0, false)), libc::EAGAIN);
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGKILL) }, 0);
    child.wait().unwrap();
    // Its locks go with its connection.
    let t = std::time::Instant::now();
    while f.lock(Posix, Some(Write), 0, u64::MAX, false).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "the dead client's lock stays"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    f.lock(Flock, Some(Write), 0, 0, false).unwrap();
    // What it stored through its mapping (into a hole: allocated and logged
    // before the store landed) is in the file.
    let mut byte = [0u8; 1];
    f.read_at(&mut byte, 5 * 4096).unwrap();
    assert_eq!(byte, [0xAB]);
    // Its pin died with it: a truncate does not wait for it.
    let t = std::time::Instant::now();
    f.set_len(0).unwrap();
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    drop((f, b));
    drop(o);
    let d = device::open(s.dev.to_str().unwrap(), &DevOpen::default()).unwrap();
    let r = udax::fs::fsck(d.clone()).unwrap();
    assert!(r.clean, "{r:?}");
}

#[test]
fn m5_a_recall_unmaps_only_the_changed_range_in_other_clients() {
    let _w = common::Watchdog::start(60, "ranged recall");
    let s = setup(64);
    let _o = serve(&s, None);
    let a = Client::connect(&s.dev, &opts(&s, true)).unwrap();
    let b = Client::connect(&s.dev, &opts(&s, true)).unwrap();
    let fb = b.open("/r", true, true, 0o644).unwrap();
    fb.write_at(&vec![4u8; 1 << 20], 0).unwrap();
    let fa = a.open("/r", false, false, 0).unwrap();
    let m = fa
        .mmap(0, 1 << 20, udax::Prot::Read, udax::MapFlags::SHARED)
        .expect(UFFD);
    assert_eq!(peek(m.as_ptr(), 0), 4);
    assert_eq!(peek(m.as_ptr(), 200 * 4096), 4);
    assert!(m.device_block_of(0).is_some() && m.device_block_of(200 * 4096).is_some());
    // A truncate to 512 KiB unmaps pages 128.. only.
    fb.set_len(512 << 10).unwrap();
    assert!(m.device_block_of(0).is_some(), "page 0 was unmapped too");
    assert_eq!(m.device_block_of(200 * 4096), None);
    // Grown again: the pages past 512 KiB are a hole; a hole fill at page
    // 150 unmaps only that page.
    fb.set_len(1 << 20).unwrap();
    assert_eq!(peek(m.as_ptr(), 200 * 4096), 0, "a hole now");
    assert!(m.device_block_of(200 * 4096).is_none(), "the zero page");
    fb.write_at(&[9u8; 10], 150 * 4096).unwrap();
    assert!(m.device_block_of(0).is_some());
    assert_eq!(peek(m.as_ptr(), 150 * 4096), 9);
    assert_eq!(peek(m.as_ptr(), 1), 4);
}

#[test]
fn p_o_append_writes_from_two_clients_never_overlap() {
    let _w = common::Watchdog::start(60, "appends across clients");
    let s = setup(64);
    let _o = serve(&s, None);
    let a = Client::connect(&s.dev, &opts(&s, true)).unwrap();
    let b = Client::connect(&s.dev, &opts(&s, true)).unwrap();
    drop(a.open("/log", true, true, 0o644).unwrap());
    // Records of 100 bytes and, every tenth, of 150 KiB (more than one
    // message: reserved whole, then written in pieces).
    let writer = |c: Client, tag: u8| {
        std::thread::spawn(move || {
            let f = c.open("/log", true, false, 0).unwrap();
            let mut at = Vec::new();
            for i in 0..200usize {
                let len = if i % 10 == 0 { 150 << 10 } else { 100 };
                let rec = vec![tag; len];
                let (off, n) = f.append(&rec).unwrap();
                assert_eq!(n, len);
                at.push((off, len));
            }
            at
        })
    };
    let (ta, tb) = (writer(a, b'A'), writer(b, b'B'));
    let mut all: Vec<(u64, usize, u8)> = ta
        .join()
        .unwrap()
        .into_iter()
        .map(|(o, n)| (o, n, b'A'))
        .chain(tb.join().unwrap().into_iter().map(|(o, n)| (o, n, b'B')))
        .collect();
    all.sort_unstable();
    let c = Client::connect(&s.dev, &opts(&s, false)).unwrap();
    let f = c.open("/log", false, false, 0).unwrap();
    let mut end = 0;
    for &(off, n, tag) in &all {
        assert_eq!(off, end, "a gap or an overlap at {off}");
        let mut buf = vec![0u8; n];
        assert_eq!(f.read_at(&mut buf, off).unwrap(), n);
        assert!(buf.iter().all(|&x| x == tag), "record at {off} mixed");
        end = off + n as u64;
    }
    assert_eq!(f.len().unwrap(), end);
}

#[test]
fn p_an_adopted_description_shares_its_offset_and_ofd_locks_until_its_last_close() {
    let _w = common::Watchdog::start(60, "shared open file descriptions");
    let s = setup(64);
    let _o = serve(&s, None);
    let parent = Client::connect(&s.dev, &opts(&s, true)).unwrap();
    let child = Client::connect(&s.dev, &opts(&s, true)).unwrap();
    let other = Client::connect(&s.dev, &opts(&s, true)).unwrap();
    let p = parent.open("/o", true, true, 0o644).unwrap();
    assert_eq!(p.write(b"0123456789").unwrap(), 10);
    assert_eq!(p.seek(0, 0).unwrap(), 0);
    // The child keeps the parent's descriptor, as after fork.
    let c = child.adopt(p.share().unwrap()).unwrap();
    let mut b = [0u8; 3];
    assert_eq!(p.read(&mut b).unwrap(), 3);
    assert_eq!(&b, b"012");
    assert_eq!(c.read(&mut b).unwrap(), 3);
    assert_eq!(&b, b"345", "the child reads on from the shared offset");
    assert_eq!(p.seek(1, 0).unwrap(), 6);
    assert_eq!(c.write(b"ab").unwrap(), 2);
    assert_eq!(p.seek(2, 0).unwrap(), 10);
    let mut all = [0u8; 10];
    p.read_at(&mut all, 0).unwrap();
    assert_eq!(&all, b"012345ab89");
    assert!(p.seek(0, -1).is_err(), "EINVAL for a negative offset");
    // An OFD lock belongs to the description: both handles hold it.
    p.lock(Ofd, Some(Write), 0, 10, false).unwrap();
    c.lock(Ofd, Some(Write), 5, 6, false).unwrap();
    c.lock(Flock, Some(Write), 0, 0, false).unwrap();
    let q = other.open("/o", true, false, 0).unwrap();
    assert_eq!(errno(q.lock(Ofd, Some(Read), 0, 1, false)), libc::EAGAIN);
    // The parent closes; the child's handle still holds the description.
    drop(p);
    assert_eq!(errno(q.lock(Ofd, Some(Read), 0, 1, false)), libc::EAGAIN);
    assert_eq!(errno(q.lock(Flock, Some(Read), 0, 0, false)), libc::EAGAIN);
    drop(c);
    q.lock(Ofd, Some(Write), 0, 10, false).unwrap();
    q.lock(Flock, Some(Write), 0, 0, false).unwrap();
    // A token holds its description until adopted (a parent may close its
    // descriptor before its forked child attaches), and adopts once.
    let t = q.share().unwrap();
    drop(q);
    let kept = child.adopt(t).unwrap();
    assert_eq!(kept.seek(1, 0).unwrap(), 0, "the description, its offset 0");
    assert!(matches!(child.adopt(t), Err(Error::BadFd)), "adopted twice");
    assert!(
        matches!(child.adopt(t ^ 2), Err(Error::BadFd)),
        "a made-up token"
    );
}

#[test]
fn mp_an_open_brings_the_files_layout_and_a_change_elsewhere_still_recalls_it() {
    let _w = common::Watchdog::start(60, "layout with the open");
    let s = setup(64);
    let _o = serve(&s, None);
    let a = Client::connect(&s.dev, &opts(&s, true)).unwrap();
    let b = Client::connect(&s.dev, &opts(&s, true)).unwrap();
    let w = a.open("/data", true, true, 0o644).unwrap();
    w.write_at(&[7u8; 3 * 4096], 0).unwrap();
    let n0 = b.requests();
    let r = b.open("/data", false, false, 0).unwrap();
    let mut buf = vec![0u8; 3 * 4096];
    assert_eq!(r.read_at(&mut buf, 0).unwrap(), buf.len());
    assert!(buf.iter().all(|&x| x == 7));
    assert_eq!(r.len().unwrap(), 3 * 4096);
    assert_eq!(
        b.requests() - n0,
        1,
        "the open alone: the read found its layout"
    );
    // B holds a lease from the open: A's truncate recalls it first.
    w.set_len(4096).unwrap();
    assert_eq!(r.read_at(&mut buf, 0).unwrap(), 4096);
    assert_eq!(r.len().unwrap(), 4096);
    // A fragmented file's layout still comes whole, through `Lease`.
    let f = a.open("/frag", true, true, 0o644).unwrap();
    for i in 0..100u64 {
        f.write_at(b"z", i * 2 * 4096).unwrap();
    }
    let g = b.open("/frag", false, false, 0).unwrap();
    let mut one = [0u8; 1];
    assert_eq!(g.read_at(&mut one, 99 * 2 * 4096).unwrap(), 1);
    assert_eq!(one, *b"z");
}

#[test]
fn mp_a_change_of_one_files_data_drops_only_that_files_cached_attributes_everywhere() {
    let _w = common::Watchdog::start(60, "scoped uncache");
    let s = setup(64);
    let _o = serve(&s, None);
    let a = Client::connect(&s.dev, &opts(&s, true)).unwrap();
    let b = Client::connect(&s.dev, &opts(&s, true)).unwrap();
    let f = a.open("/x", true, true, 0o644).unwrap();
    a.create("/y", 0o644).unwrap();
    a.link("/x", "/x2").unwrap();
    let sized = |c: &Client, p: &str| c.stat(p).unwrap().size;
    assert_eq!(
        (sized(&a, "/y"), sized(&b, "/y"), sized(&b, "/x")),
        (0, 0, 0)
    );
    let listing = |c: &Client| c.read_dir("/").unwrap().len();
    assert_eq!(listing(&b), 3);
    // A writes /x (through the owner: a growth), truncates it, stamps its
    // times through its handle: each drops /x (under both its names) from
    // every cache, and nothing else.
    let changes: [&dyn Fn(); 3] = [
        &|| assert_eq!(f.write_at(b"hello", 0).unwrap(), 5),
        &|| f.set_len(3).unwrap(),
        &|| f.set_times(None, Some(7)).unwrap(),
    ];
    let mut want = [5u64, 3, 3].into_iter();
    for change in changes {
        change();
        let size = want.next().unwrap();
        let (na, nb) = (a.requests(), b.requests());
        assert_eq!(sized(&b, "/y"), 0);
        assert_eq!(listing(&b), 3);
        assert_eq!(sized(&a, "/y"), 0);
        assert_eq!(
            (a.requests(), b.requests()),
            (na, nb),
            "another file's attributes or a listing went to the owner"
        );
        assert_eq!(sized(&b, "/x"), size);
        assert_eq!(sized(&b, "/x2"), size, "the other name of the file");
        assert_eq!(sized(&a, "/x"), size, "the writer's own cache");
        assert_eq!(
            b.requests(),
            nb + 2,
            "the changed file's stats asked the owner"
        );
    }
    assert_eq!(b.stat("/x").unwrap().mtime_ns, 7);
    // A change of a name drops the directory's listing.
    a.create("/z", 0o644).unwrap();
    assert_eq!(listing(&b), 4);
}

#[test]
fn mp_a_change_of_a_name_drops_only_the_answers_whose_walks_looked_it_up_everywhere() {
    let _w = common::Watchdog::start(60, "name-scoped uncache");
    let s = setup(64);
    let _o = serve(&s, None);
    let a = Client::connect(&s.dev, &opts(&s, true)).unwrap();
    let b = Client::connect(&s.dev, &opts(&s, true)).unwrap();
    for d in ["/d1", "/d2"] {
        a.mkdir(d, 0o755).unwrap();
    }
    for f in ["/d1/f", "/d1/f2", "/d2/g"] {
        a.create(f, 0o644).unwrap();
    }
    // Everything B (and A) will look at, cached.
    let look = |c: &Client| {
        (
            c.stat("/d1/f").unwrap().ino,
            c.stat("/d2/g").unwrap().ino,
            c.stat("/d1/f2").unwrap().nlink,
            c.read_dir("/d2").unwrap().len(),
            c.stat("/d1").unwrap().mtime_ns,
            c.read_dir("/d1").unwrap().len(),
        )
    };
    let (f, g, _, _, d1_time, _) = look(&b);
    look(&a);
    let unchanged = |c: &Client, what: &str| {
        let n = c.requests();
        assert_eq!(c.stat("/d1/f").unwrap().ino, f);
        assert_eq!(c.stat("/d2/g").unwrap().ino, g);
        assert_eq!(c.read_dir("/d2").unwrap().len(), 1);
        assert_eq!(
            c.requests(),
            n,
            "{what}: an answer no changed name decided went to the owner"
        );
    };
    // A creates /d1/new: /d1's attributes and listing go, in both
    // clients; nothing else does.
    std::thread::sleep(Duration::from_millis(2));
    a.create("/d1/new", 0o644).unwrap();
    unchanged(&b, "create, another client");
    unchanged(&a, "create, the creator");
    for c in [&a, &b] {
        let n = c.requests();
        assert!(
            c.stat("/d1").unwrap().mtime_ns > d1_time,
            "the directory's times"
        );
        assert_eq!(c.read_dir("/d1").unwrap().len(), 3);
        assert_eq!(c.requests(), n + 2);
    }
    // A link changes the linked file's link count (under its other name).
    a.link("/d1/f2", "/d2/h").unwrap();
    assert_eq!(b.stat("/d1/f2").unwrap().nlink, 2);
    assert_eq!(b.read_dir("/d2").unwrap().len(), 2);
    // A rename of a directory: every path through its old name goes, in
    // both clients, and the new one resolves.
    a.rename("/d2", "/d3").unwrap();
    for c in [&a, &b] {
        assert!(matches!(c.stat("/d2/g"), Err(udax::fs::Error::NotFound)));
        assert!(matches!(c.read_dir("/d2"), Err(udax::fs::Error::NotFound)));
        assert_eq!(c.stat("/d3/g").unwrap().ino, g);
        assert_eq!(c.stat("/d1/f").unwrap().ino, f);
    }
    // An unlink: the name goes; another name of a file changed through
    // one name shows the change.
    a.unlink("/d1/f2").unwrap();
    for c in [&a, &b] {
        assert!(matches!(c.stat("/d1/f2"), Err(udax::fs::Error::NotFound)));
        assert_eq!(c.stat("/d3/h").unwrap().nlink, 1);
    }
    // A path that names nothing is answered from the cache too, until a
    // name its walk looked up comes.
    let n = b.requests();
    for _ in 0..10 {
        assert!(matches!(b.stat("/d2/g"), Err(udax::fs::Error::NotFound)));
    }
    assert_eq!(b.requests(), n, "a cached ENOENT went to the owner");
    a.mkdir("/d2", 0o755).unwrap();
    assert!(matches!(b.stat("/d2/g"), Err(udax::fs::Error::NotFound)));
    a.create("/d2/g", 0o644).unwrap();
    assert_ne!(b.stat("/d2/g").unwrap().ino, g);
    // Pages of a listing read by cookie: the same.
    let names = |c: &Client| {
        let mut v: Vec<_> = c
            .read_dir_page("/d3", 0)
            .unwrap()
            .entries
            .into_iter()
            .map(|(_, e)| e.name)
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(&b), ["g", "h"]);
    let n = b.requests();
    assert_eq!(names(&b), ["g", "h"]);
    assert_eq!(b.requests(), n, "a cached page went to the owner");
    a.create("/d3/i", 0o644).unwrap();
    assert_eq!(names(&b), ["g", "h", "i"]);
}

#[test]
fn mp_a_stat_after_the_clients_own_create_needs_no_round_trip_and_sees_the_new_file() {
    let _w = common::Watchdog::start(60, "seeded creates");
    let s = setup(64);
    let _o = serve(&s, None);
    let a = Client::connect(&s.dev, &opts(&s, true)).unwrap();
    let b = Client::connect(&s.dev, &opts(&s, true)).unwrap();
    a.mkdir("/d", 0o755).unwrap();
    // Cached before: the names are free.
    for p in ["/d/f", "/d/g", "/d/s"] {
        assert!(matches!(a.stat(p), Err(Error::NotFound)));
    }
    // An open that creates (as dbench's), a create, a mkdir, a symlink:
    // each change's answer brings what its path shows now.
    let f = a.open("/d/f", true, true, 0o644).unwrap();
    let n = a.requests();
    let st = a.stat("/d/f").unwrap();
    assert_eq!(st.ino, f.ino());
    assert_eq!(a.lstat("/d/f").unwrap(), st);
    assert_eq!(f.stat().unwrap().ino, st.ino, "fstat");
    assert_eq!(a.requests(), n, "a stat after the client's own create");
    a.create("/d/g", 0o600).unwrap();
    a.mkdir("/d/s", 0o700).unwrap();
    a.symlink(b"f", "/d/l").unwrap();
    let n = a.requests();
    assert_eq!(a.stat("/d/g").unwrap().mode & 0o777, 0o600);
    assert!(a.stat("/d/s").unwrap().is_dir());
    assert_eq!(a.lstat("/d/l").unwrap().mode & libc::S_IFMT, libc::S_IFLNK);
    assert_eq!(a.requests(), n, "stats after the client's own changes");
    // Exactly what the owner answers another client.
    for p in ["/d/f", "/d/g", "/d/s"] {
        assert_eq!(a.stat(p).unwrap(), b.stat(p).unwrap(), "{p}");
    }
    assert_eq!(a.lstat("/d/l").unwrap(), b.lstat("/d/l").unwrap());
    // stat through the link is not seeded (its walk goes on to the target).
    assert_eq!(a.stat("/d/l").unwrap().ino, st.ino);
    assert_eq!(a.requests(), n + 1);
    // Another client's later change of the name drops it as before.
    b.unlink("/d/g").unwrap();
    assert!(matches!(a.stat("/d/g"), Err(Error::NotFound)));
    b.create("/d/g", 0o644).unwrap();
    assert_eq!(a.stat("/d/g").unwrap().mode & 0o777, 0o644);
}

#[test]
fn mp_a_stat_after_the_clients_own_unlink_rmdir_or_rename_needs_no_round_trip_and_finds_the_name_as_it_is_now(
) {
    let _w = common::Watchdog::start(60, "seeded removals");
    let s = setup(64);
    let _o = serve(&s, None);
    let a = Client::connect(&s.dev, &opts(&s, true)).unwrap();
    let b = Client::connect(&s.dev, &opts(&s, true)).unwrap();
    a.mkdir("/d", 0o755).unwrap();
    for p in ["/d/f", "/d/g", "/d/x", "/d/y"] {
        a.create(p, 0o644).unwrap();
    }
    a.mkdir("/d/s", 0o755).unwrap();
    let g = a.stat("/d/g").unwrap().ino;
    let (x, y) = (a.stat("/d/x").unwrap().ino, a.stat("/d/y").unwrap().ino);
    let n = a.requests();
    a.unlink("/d/f").unwrap();
    assert!(matches!(a.stat("/d/f"), Err(Error::NotFound)));
    assert!(matches!(a.lstat("/d/f"), Err(Error::NotFound)));
    a.rmdir("/d/s").unwrap();
    assert!(matches!(a.stat("/d/s"), Err(Error::NotFound)));
    // A rename: the old name names nothing, the new one the file.
    a.rename("/d/g", "/d/h").unwrap();
    assert!(matches!(a.stat("/d/g"), Err(Error::NotFound)));
    assert_eq!(a.stat("/d/h").unwrap().ino, g);
    // An exchange: both names, swapped.
    a.rename2("/d/x", "/d/y", udax::fs::Rename::Exchange)
        .unwrap();
    assert_eq!(a.stat("/d/x").unwrap().ino, y);
    assert_eq!(a.stat("/d/y").unwrap().ino, x);
    // A link: the new name.
    a.link("/d/h", "/d/k").unwrap();
    assert_eq!(a.stat("/d/k").unwrap().nlink, 2);
    assert_eq!(
        a.requests(),
        n + 5,
        "a stat after the client's own change went to the owner"
    );
    for p in ["/d/f", "/d/s", "/d/g"] {
        assert!(matches!(b.stat(p), Err(Error::NotFound)), "{p}");
    }
    for p in ["/d/h", "/d/x", "/d/y", "/d/k"] {
        assert_eq!(a.stat(p).unwrap(), b.stat(p).unwrap(), "{p}");
    }
}

/// [`mp_another_clients_change_between_the_owners_answer_and_the_seeding_drops_the_seeded_answer`]:
/// B, and the change it makes when armed.
static RACER: std::sync::Mutex<Option<Racer>> = std::sync::Mutex::new(None);

/// B and the change it makes.
type Racer = (Client, fn(&Client));

/// A's hook between the owner's answer to its change and the seeding.
fn race_in() {
    if let Some((b, change)) = RACER.lock().unwrap().take() {
        change(&b);
    }
}

#[test]
fn mp_another_clients_change_between_the_owners_answer_and_the_seeding_drops_the_seeded_answer() {
    let _w = common::Watchdog::start(60, "seeding race");
    let s = setup(64);
    let _o = serve(&s, None);
    let a = Client::connect(
        &s.dev,
        &udax::client::ConnectOptions {
            before_seeding: Some(race_in),
            ..opts(&s, true)
        },
    )
    .unwrap();
    a.mkdir("/d", 0o755).unwrap();
    let arm = |change: fn(&Client)| {
        let b = Client::connect(&s.dev, &opts(&s, true)).unwrap();
        *RACER.lock().unwrap() = Some((b, change));
    };
    // A creates /d/f; B removes it after the owner answered A, before A
    // keeps what the answer said: A's stat must not find it.
    arm(|b| b.unlink("/d/f").unwrap());
    let f = a.open("/d/f", true, true, 0o644).unwrap();
    assert!(RACER.lock().unwrap().is_none(), "B did not run");
    assert!(
        matches!(a.stat("/d/f"), Err(Error::NotFound)),
        "A's stat shows a file B removed before it"
    );
    drop(f);
    // A renames /d/g away; B makes a new /d/g meanwhile.
    a.create("/d/g", 0o644).unwrap();
    arm(|b| b.mkdir("/d/g", 0o700).unwrap());
    a.rename("/d/g", "/d/h").unwrap();
    assert!(
        a.stat("/d/g").unwrap().is_dir(),
        "A's stat misses B's new directory"
    );
    // B grows the renamed file (a record of its inode alone).
    a.create("/d/i", 0o644).unwrap();
    arm(|b| {
        let f = b.open("/d/j", true, false, 0).unwrap();
        assert_eq!(f.write_at(b"abc", 0).unwrap(), 3);
    });
    a.rename("/d/i", "/d/j").unwrap();
    assert_eq!(a.stat("/d/j").unwrap().size, 3, "A's stat misses B's write");
    // Without a change in between, the seed is kept.
    a.create("/d/k", 0o644).unwrap();
    let n = a.requests();
    assert!(a.stat("/d/k").is_ok());
    assert_eq!(a.requests(), n);
}

#[test]
fn mp_stat_in_one_client_sees_another_clients_change_as_soon_as_its_call_returns() {
    let _w = common::Watchdog::start(60, "attribute caches");
    let s = setup(64);
    let o = serve(&s, None);
    let a = Client::connect(&s.dev, &opts(&s, true)).unwrap();
    let b = Client::connect(&s.dev, &opts(&s, true)).unwrap();
    let f = a.open("/f", true, true, 0o644).unwrap();
    assert_eq!(b.stat("/f").unwrap().size, 0);
    // Answered from B's cache while nothing changes: no request.
    let n = b.requests();
    for _ in 0..100 {
        assert_eq!(b.stat("/f").unwrap().size, 0);
    }
    assert_eq!(b.requests(), n, "stat went to the owner");
    // Every change by A shows in B's next stat.
    f.write_at(b"12345", 0).unwrap();
    assert_eq!(b.stat("/f").unwrap().size, 5);
    f.set_len(2).unwrap();
    assert_eq!(b.stat("/f").unwrap().size, 2);
    a.set_permissions("/f", 0o600).unwrap();
    assert_eq!(b.stat("/f").unwrap().mode & 0o777, 0o600);
    a.set_times("/f", None, Some(42)).unwrap();
    assert_eq!(b.stat("/f").unwrap().mtime_ns, 42);
    a.link("/f", "/g").unwrap();
    assert_eq!(b.stat("/f").unwrap().nlink, 2);
    a.rename("/g", "/h").unwrap();
    assert!(matches!(b.stat("/g"), Err(Error::NotFound)));
    assert_eq!(b.stat("/h").unwrap().nlink, 2);
    let names = |c: &Client| -> Vec<String> {
        let mut v: Vec<String> = c
            .read_dir("/")
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(&b), ["f", "h"]);
    let n = b.requests();
    assert_eq!(names(&b), ["f", "h"]);
    assert_eq!(b.requests(), n, "readdir went to the owner");
    a.unlink("/h").unwrap();
    assert_eq!(names(&b), ["f"], "B's listing after A's unlink");
    assert!(matches!(b.stat("/h"), Err(Error::NotFound)));
    assert_eq!(b.stat("/f").unwrap().nlink, 1);
    f.append(b"xyz").unwrap();
    assert_eq!(b.stat("/f").unwrap().size, 5);
    // fstat is cached too, and dropped by others' changes.
    assert_eq!(f.stat().unwrap().size, 5);
    let n = a.requests();
    assert_eq!(f.stat().unwrap().size, 5);
    assert_eq!(a.requests(), n, "fstat went to the owner");
    // B's own changes drop its own cache.
    let g = b.open("/f", true, false, 0).unwrap();
    g.set_len(9).unwrap();
    assert_eq!(b.stat("/f").unwrap().size, 9);
    assert_eq!(f.stat().unwrap().size, 9, "A's fstat after B's truncate");
    // In-place overwrites reach others' stat with their mtime at fsync.
    let m0 = b.stat("/f").unwrap().mtime_ns;
    std::thread::sleep(Duration::from_millis(5));
    f.write_at(b"Q", 0).unwrap();
    f.fsync().unwrap();
    assert!(b.stat("/f").unwrap().mtime_ns > m0);
    // And at close, with the close itself: one request.
    let n = b.requests();
    // (With O_CREAT: it finds the file, which it does not change.)
    let h = b.open("/f", true, true, 0o644).unwrap();
    // The open brought the attributes its fstat answers.
    assert_eq!(h.stat().unwrap().size, 9);
    assert_eq!(
        b.requests(),
        n + 1,
        "the fstat after an open went to the owner"
    );
    let m1 = a.stat("/f").unwrap().mtime_ns;
    std::thread::sleep(Duration::from_millis(5));
    h.write_at(b"R", 1).unwrap();
    let n = b.requests();
    // The writer's own fstat shows the time of its in-place overwrite
    // before the owner has it.
    let m2 = h.stat().unwrap().mtime_ns;
    assert!(
        m2 > m1,
        "fstat after an in-place overwrite: mtime {m2} <= {m1}"
    );
    assert_eq!(
        b.requests(),
        n,
        "the overwrite or its fstat went to the owner"
    );
    drop(h);
    assert_eq!(b.requests(), n + 1, "a close and its mtime in one request");
    assert!(
        a.stat("/f").unwrap().mtime_ns > m1,
        "the mtime sent with the close"
    );
    // With the owner gone nothing is cached any more (a new owner may
    // change anything): stat fails instead of answering from the cache.
    drop((f, g));
    drop(o);
    let t = std::time::Instant::now();
    while b.stat("/f").is_ok() {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "stat answers from a dead owner's cache"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn m12_io_into_another_files_mapping_races_punch_and_truncate_in_one_client() {
    // generic/438 and 503 through the owner, in one client: a thread writes
    // the raced file R and reads it into a mapping of B (whose blocks are
    // allocated while R's are freed, so they reuse them), while the main
    // thread punches, zeroes, truncates and collapses R and stores through
    // its own mapping of R. Nothing may fail that the kernel would not fail.
    use udax::fs::falloc::{COLLAPSE_RANGE, KEEP_SIZE, PUNCH_HOLE, ZERO_RANGE};
    let _w = common::Watchdog::start(120, "I/O vs punch and truncate in one client");
    let s = setup(64);
    let _o = serve(&s, None);
    let a = Arc::new(Client::connect(&s.dev, &opts(&s, true)).unwrap());
    const PG: usize = 4096;
    const RSZ: usize = 64 * PG;
    let r = Arc::new(a.open("/race", true, true, 0o644).unwrap());
    r.set_len(RSZ as u64).unwrap();
    let m = r
        .mmap(0, RSZ, udax::Prot::ReadWrite, udax::MapFlags::SHARED)
        .expect(UFFD);
    let b = a.open("/race.buf", true, true, 0o644).unwrap();
    b.set_len(32 * PG as u64).unwrap();
    let rmap = b
        .mmap(0, 32 * PG, udax::Prot::ReadWrite, udax::MapFlags::SHARED)
        .expect(UFFD);
    let rbase = rmap.as_ptr() as usize;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let io = {
        let (stop, r) = (stop.clone(), r.clone());
        std::thread::spawn(move || {
            let mut n = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let off = ((n * 13) % 64 * PG) as u64;
                assert_eq!(r.write_at(&[n as u8; PG], off).unwrap(), PG);
                // SAFETY: page (n*7)%32 lies inside `rmap`, alive until joined.
                let dst = unsafe {
                    std::slice::from_raw_parts_mut((rbase + (n * 7) % 32 * PG) as *mut u8, PG)
                };
                r.read_at(dst, off).unwrap();
                peek(rbase as *const u8, (n * 5) % 16 * PG);
                n += 1;
            }
            n
        })
    };
    for i in 0..300u64 {
        let o = (i % 8) * 2 * PG as u64;
        r.fallocate(PUNCH_HOLE | KEEP_SIZE, o, 2 * PG as u64)
            .unwrap_or_else(|e| panic!("round {i}: punch: {e}"));
        r.fallocate(ZERO_RANGE, o + PG as u64, PG as u64)
            .unwrap_or_else(|e| panic!("round {i}: zero range: {e}"));
        if i % 10 == 0 {
            r.set_len(16 * PG as u64)
                .unwrap_or_else(|e| panic!("round {i}: shrink: {e}"));
            r.set_len(RSZ as u64).unwrap();
            r.fallocate(COLLAPSE_RANGE, 2 * PG as u64, 2 * PG as u64)
                .unwrap_or_else(|e| panic!("round {i}: collapse: {e}"));
            r.set_len(RSZ as u64).unwrap();
        }
        poke(m.as_ptr(), (i as usize % 16) * PG, b'm');
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let n = io.join().unwrap();
    assert!(n > 0);
    drop((m, rmap));
}

fn errno_of<T>(r: udax::Result<T>) -> i32 {
    match r {
        Ok(_) => 0,
        Err(e) => e.errno(),
    }
}

/// A client that connected as root and then dropped (its thread alone, as
/// pjdfstest's helper and servers that drop privileges do) to another uid,
/// gid and groups is checked with what it became at each call: denied a
/// write to root's 0644 file, allowed one where its new group may write,
/// refused a stat under root's 0700 directory that it cached as root, and
/// a chmod of another's file; root again, allowed; with only its
/// file-system uid changed (`setfsuid`), denied again.
#[test]
fn mp_a_root_client_that_drops_privileges_after_connecting_is_checked_as_what_it_became() {
    if !common::root() {
        eprintln!("skipped: needs root to act as another user (CI runs as root)");
        return;
    }
    let _w = common::Watchdog::start(60, "privileges dropped after connecting");
    let s = setup(16);
    let _o = serve(&s, None);
    let admin = Client::connect(&s.dev, &opts(&s, true)).unwrap();
    admin.set_permissions("/", 0o755).unwrap();
    admin.create("/root-only", 0o644).unwrap();
    admin.set_permissions("/root-only", 0o644).unwrap();
    admin.create("/group", 0o664).unwrap();
    admin.set_permissions("/group", 0o664).unwrap();
    admin.set_owner("/group", None, Some(2000)).unwrap();
    admin.mkdir("/private", 0o700).unwrap();
    admin.set_permissions("/private", 0o700).unwrap();
    admin.create("/private/x", 0o644).unwrap();
    let (dev, o) = (s.dev.clone(), opts(&s, true));
    std::thread::spawn(move || {
        let c = Client::connect(&dev, &o).unwrap();
        assert!(c.stat("/private/x").is_ok(), "root looks");
        common::as_thread(1000, 1000, &[2000]);
        assert_eq!(errno_of(c.open("/root-only", true, false, 0)), libc::EACCES);
        assert_eq!(
            errno_of(c.open("/group", true, false, 0)),
            0,
            "its group writes"
        );
        assert_eq!(errno_of(c.create("/mine", 0o644)), libc::EACCES);
        assert_eq!(errno_of(c.stat("/private/x")), libc::EACCES, "not cached");
        assert_eq!(errno_of(c.set_permissions("/group", 0o666)), libc::EPERM);
        common::as_thread(0, 0, &[]);
        assert_eq!(
            errno_of(c.open("/root-only", true, false, 0)),
            0,
            "root again"
        );
        common::thread_fsuid(1000);
        assert_eq!(
            errno_of(c.open("/root-only", true, false, 0)),
            libc::EACCES,
            "the file-system uid decides"
        );
        common::thread_fsuid(0);
        assert_eq!(errno_of(c.open("/root-only", true, false, 0)), 0);
    })
    .join()
    .unwrap();
}

/// A client that is not root cannot claim credentials its thread does not
/// have: root's, a group it is not in, or those of a thread of another
/// process (init's) are refused with EPERM (and logged); its true ones
/// are checked as they are (EACCES on root's 0644 file), and the owner
/// goes on serving it.
#[test]
fn mp_a_non_root_clients_forged_claim_is_refused() {
    if !common::root() {
        eprintln!("skipped: needs root to run a client as another user (CI runs as root)");
        return;
    }
    let _w = common::Watchdog::start(60, "forged claims");
    let s = setup(16);
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path, m: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m));
    mode(s._dir.path(), 0o755).unwrap();
    mode(&s.dev, 0o666).unwrap();
    let o = serve(&s, None);
    mode(&o.socket, 0o666).unwrap();
    let admin = Client::connect(&s.dev, &opts(&s, true)).unwrap();
    admin.create("/root-only", 0o644).unwrap();
    admin.set_permissions("/root-only", 0o644).unwrap();
    let socket = o.socket.clone();
    std::thread::spawn(move || {
        common::as_thread(1000, 1000, &[]);
        let sock = wire::connect(&socket).unwrap();
        let hello = Request::Hello {
            version: proto::VERSION,
            write: true,
        };
        assert!(matches!(
            exchange(&sock, &hello.encode(1)),
            Some(Reply::Hello { .. })
        ));
        let tid = rustix::thread::gettid().as_raw_nonzero().get() as u32;
        let open = |tid: u32, uid: u32, gid: u32, groups: &[u32], id: u64| {
            let req = Request::As {
                claim: proto::Claim {
                    tid,
                    uid,
                    gid,
                    groups: groups.to_vec(),
                },
                req: Box::new(Request::Open {
                    path: b"/root-only".to_vec(),
                    read: true,
                    write: true,
                    create: false,
                    excl: false,
                    trunc: false,
                    nofollow: false,
                    mode: 0,
                }),
            };
            match exchange(&sock, &req.encode(id)) {
                Some(Reply::Error { errno, .. }) => errno,
                other => panic!("claim {uid}:{gid} {groups:?} of thread {tid}: {other:?}"),
            }
        };
        assert_eq!(open(tid, 0, 0, &[], 2), libc::EPERM, "root's");
        assert_eq!(open(tid, 1000, 1000, &[0], 3), libc::EPERM, "root's group");
        assert_eq!(open(1, 0, 0, &[], 4), libc::EPERM, "init's thread");
        assert_eq!(open(tid, 1000, 1000, &[], 5), libc::EACCES, "its own");
        assert_eq!(exchange(&sock, &Request::Ping.encode(6)), Some(Reply::Pong));
        // The library sends its true credentials.
        let c = Client::connect_socket(&socket, true).unwrap();
        assert_eq!(errno_of(c.open("/root-only", true, false, 0)), libc::EACCES);
        assert_eq!(errno_of(c.open("/root-only", false, false, 0)), 0);
        drop(c);
        common::as_thread(0, 0, &[]);
    })
    .join()
    .unwrap();
}

/// The bytes a growing write of `len` at `off` carries in
/// [`mp_a_large_growing_write_in_a_client_is_copied_in_place_in_five_round_trips`]
/// and the race below: each 4 KiB block says which write and block it is.
fn grow_pattern(tag: u8, off: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| {
            let at = off as usize + i;
            tag ^ ((at / 4096) as u8).wrapping_mul(31) ^ (at as u8 & 0x0f)
        })
        .collect()
}

#[test]
fn mp_a_large_growing_write_in_a_client_is_copied_in_place_in_five_round_trips() {
    let _w = common::Watchdog::start(60, "growing writes");
    let s = setup(64);
    let o = serve(&s, None);
    let c = Client::connect(&s.dev, &opts(&s, true)).unwrap();
    let r = Client::connect(&s.dev, &opts(&s, false)).unwrap();
    let f = c.open("/f", true, true, 0o644).unwrap();
    f.write_at(b"head", 0).unwrap();
    // 1 MiB past a gap: through `Write` it would be 18 requests with the
    // bytes in them; in place it is a lease (is the range in place?), an
    // fallocate, the new lease, the extend, and the modification time.
    let (off, len) = (10_000u64, 1 << 20);
    let data = grow_pattern(7, off, len);
    let (n0, r0) = (c.requests(), c.recalls());
    assert_eq!(f.write_at(&data, off).unwrap(), len);
    let sent = c.requests() - n0;
    assert!(sent <= 5, "{sent} requests for a 1 MiB growing write");
    // Its growth left the writer's own lease to it: no call back
    // (docs/multiprocess.md, "The writer's own lease").
    assert_eq!(c.recalls(), r0, "the writer was called back");
    // Another client sees the size and the bytes as soon as the call
    // returned; the gap reads as zeros.
    assert_eq!(r.stat("/f").unwrap().size, off + len as u64);
    let g = r.open("/f", false, false, 0).unwrap();
    let mut back = vec![1u8; off as usize + len];
    assert_eq!(g.read_at(&mut back, 0).unwrap(), back.len());
    assert_eq!(&back[..4], b"head");
    assert!(
        back[4..off as usize].iter().all(|&b| b == 0),
        "the gap is zeros"
    );
    assert!(
        back[off as usize..] == data[..],
        "the bytes written in place"
    );
    // Filling a hole inside the file takes the same path, without a size
    // change, and no call back either (the other client's stat above
    // settled the writer's grant: that was one).
    let hole = grow_pattern(9, 2 << 20, 256 << 10);
    let r1 = c.recalls();
    f.set_len(3 << 20).unwrap();
    assert_eq!(f.write_at(&hole, 2 << 20).unwrap(), hole.len());
    assert_eq!(f.len().unwrap(), 3 << 20);
    assert_eq!(c.recalls(), r1, "the writer was called back");
    // Larger than any size grant: an fallocate, the copy, an `Extend`.
    let big = grow_pattern(11, 3 << 20, 9 << 20);
    assert_eq!(f.write_at(&big, 3 << 20).unwrap(), big.len());
    assert_eq!(f.len().unwrap(), 12 << 20);
    assert_eq!(c.recalls(), r1, "the writer was called back");
    drop((f, g, c, r));
    drop(o);
    let d = device::open(s.dev.to_str().unwrap(), &DevOpen::default()).unwrap();
    let report = udax::fs::fsck(d.clone()).unwrap();
    assert!(report.clean, "{:?}", report.problems);
    let fs = Fs::mount(d).unwrap();
    let h = fs.open("/f", &udax::fs::OpenOptions::read_only()).unwrap();
    let mut got = vec![0u8; len];
    h.read_at(&mut got, off).unwrap();
    assert!(got == data, "the growth is durable with its bytes");
    let mut got = vec![0u8; hole.len()];
    h.read_at(&mut got, 2 << 20).unwrap();
    assert!(got == hole, "the hole's bytes are durable");
    let mut got = vec![0u8; big.len()];
    h.read_at(&mut got, 3 << 20).unwrap();
    assert!(got == big, "the extended bytes are durable");
    drop(h);
    fs.unmount().unwrap();
}

#[test]
fn mp_a_large_growing_write_racing_another_clients_write_past_it_is_never_lost() {
    // A's growing write copies its bytes into blocks past the end of file
    // before the owner grows the size over them; B's small write further
    // on grows the file first and zeroes what lies between the old end and
    // its offset: A's bytes. The owner must then refuse A's growth (its
    // lease epoch moved) so that A writes them again; both writes land.
    let _w = common::Watchdog::start(120, "growing write races");
    let s = setup(256);
    let _o = serve(&s, None);
    let a = Client::connect(&s.dev, &opts(&s, true)).unwrap();
    let b = Client::connect(&s.dev, &opts(&s, true)).unwrap();
    let fa = a.open("/f", true, true, 0o644).unwrap();
    let fb = b.open("/f", true, false, 0).unwrap();
    let len = 192usize << 10;
    let stride = len as u64 + 8192;
    for i in 0..120u64 {
        let off = i * stride;
        let data = grow_pattern(i as u8, off, len);
        let gap = off + len as u64 + 4096;
        let start = std::sync::Barrier::new(2);
        std::thread::scope(|t| {
            t.spawn(|| {
                start.wait();
                // Let A reach its copy now and then.
                std::thread::sleep(Duration::from_micros((i % 7) * 15));
                assert_eq!(fb.write_at(b"B", gap).unwrap(), 1);
            });
            start.wait();
            assert_eq!(fa.write_at(&data, off).unwrap(), len);
        });
        let mut back = vec![0u8; len];
        assert_eq!(fb.read_at(&mut back, off).unwrap(), len);
        assert!(back == data, "round {i}: A's write at {off} was lost");
        let mut one = [0u8; 1];
        fb.read_at(&mut one, gap).unwrap();
        assert_eq!(&one, b"B", "round {i}: B's write");
    }
}

/// What a cached answer must agree on with the owner: the file (ino,
/// type, size, links) or the error.
fn seen(r: udax::Result<udax::fs::Stat>) -> Result<(u64, u32, u64, u32), i32> {
    r.map(|s| (s.ino, s.mode, s.size, s.nlink))
        .map_err(|e| e.errno())
}

#[test]
fn mp_cached_answers_match_the_owners_after_every_step_of_a_random_workload_of_two_clients() {
    let _w = common::Watchdog::start(240, "cached answers against the owner's");
    let s = setup(64);
    let _o = serve(&s, None);
    let clients = [
        Client::connect(&s.dev, &opts(&s, true)).unwrap(),
        Client::connect(&s.dev, &opts(&s, true)).unwrap(),
    ];
    let dirs = ["/", "/d0", "/d1", "/d0/e"];
    let mut paths: Vec<String> = dirs.iter().map(|d| d.to_string()).collect();
    for d in dirs {
        for f in ["f0", "f1", "e"] {
            paths.push(format!("{}/{f}", d.trim_end_matches('/')));
        }
    }
    paths.push("/d0/e/../f0".into());
    paths.push("/d0/e/f1/".into());
    // A fixed-seed generator: the same workload every run.
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut next = |n: usize| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % n as u64) as usize
    };
    for step in 0..250 {
        let c = &clients[next(2)];
        let (p, q) = (
            paths[next(paths.len())].clone(),
            paths[next(paths.len())].clone(),
        );
        let what = match next(9) {
            0 => {
                let _ = c.create(&p, 0o644);
                "create"
            }
            1 => {
                let _ = c.mkdir(&p, 0o755);
                "mkdir"
            }
            2 => {
                let _ = c.unlink(&p);
                "unlink"
            }
            3 => {
                let _ = c.rmdir(&p);
                "rmdir"
            }
            4 => {
                let _ = c.rename(&p, &q);
                "rename"
            }
            5 => {
                let _ = c.link(&p, &q);
                "link"
            }
            6 => {
                if let Ok(f) = c.open(&p, true, false, 0) {
                    let _ = f.append(&vec![step as u8; 1 + next(9000)]);
                }
                "append"
            }
            7 => {
                // A link to a name in its own directory or the one above:
                // a walk through it looks up the target's names too.
                let target = ["f0", "e", "../f1", "e/f0"][next(4)];
                let _ = c.symlink(target.as_bytes(), &p);
                "symlink"
            }
            _ => {
                if let Ok(f) = c.open(&p, true, false, 0) {
                    let _ = f.set_len(next(5000) as u64);
                }
                "truncate"
            }
        };
        // A client that has cached nothing answers as the owner does.
        let fresh = Client::connect(&s.dev, &opts(&s, false)).unwrap();
        for path in &paths {
            let want = seen(fresh.stat(path));
            let listing = |c: &Client| {
                c.read_dir(path).map(|v| {
                    let mut v: Vec<_> = v.into_iter().map(|e| (e.name, e.ino)).collect();
                    v.sort();
                    v
                })
            };
            let want_dir = listing(&fresh).map_err(|e| e.errno());
            for (i, c) in clients.iter().enumerate() {
                assert_eq!(
                    seen(c.stat(path)),
                    want,
                    "step {step} ({what} {p} {q}): client {i}'s stat of {path}"
                );
                assert_eq!(
                    listing(c).map_err(|e| e.errno()),
                    want_dir,
                    "step {step} ({what} {p} {q}): client {i}'s listing of {path}"
                );
            }
        }
    }
}

// ---- a client cut off while its process lives: the quarantine ----

/// The next line of a child's stderr that starts with `word`, split into
/// its words after it.
fn child_says(lines: &mut impl Iterator<Item = std::io::Result<String>>, word: &str) -> Vec<u64> {
    loop {
        match lines.next() {
            Some(Ok(l)) if l.split_whitespace().next() == Some(word) => {
                return l
                    .split_whitespace()
                    .skip(1)
                    .map(|w| w.parse().unwrap())
                    .collect()
            }
            Some(Ok(_)) => continue,
            other => panic!("the child client did not say {word:?}: {other:?}"),
        }
    }
}

/// Wait until process `pid` is stopped (SIGSTOP reached it).
fn wait_stopped(pid: u32) {
    let t = std::time::Instant::now();
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        // The state follows the command's closing parenthesis.
        let state = stat.rsplit(')').next().unwrap().split_whitespace().next();
        if state == Some("T") {
            return;
        }
        assert!(t.elapsed() < Duration::from_secs(5), "{pid} not stopped");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// An owner of `s` whose recall bound is short (a cut-off within a test).
fn serve_cutting_off(s: &common::serving::Setup) -> Serving {
    serve_cutting_off_idle(s, None)
}

/// [`serve_cutting_off`] that exits after `idle` without clients.
fn serve_cutting_off_idle(s: &common::serving::Setup, idle: Option<Duration>) -> Serving {
    let o = Owner::new(
        &s.dev,
        &ServeOptions {
            idle,
            runtime_dir: Some(s.run.clone()),
            recall_timeout: Duration::from_millis(300),
        },
    )
    .unwrap();
    let (stop, socket) = (o.stopper(), o.socket().to_path_buf());
    Serving {
        stop,
        socket,
        thread: Some(std::thread::spawn(move || o.run())),
    }
}

/// The blocks `/f` of the cut-off tests has (1 MiB).
const F_BLOCKS: u64 = 256;

/// The body of `mp_a_client_cut_off_while_alive_never_sees_its_blocks_in_another_file`,
/// run as its child process: a client that opens `/f` (taking its lease),
/// maps the device file itself where the file's blocks are (as its fault
/// engine maps them: the mapping the owner cannot take away), says "ready"
/// and waits for a line on stdin (it is stopped meanwhile, and cut off);
/// then reads its mapping, says how many bytes of each pattern it saw,
/// stores 0xBB over all of it, says "stored" and waits to be killed.
#[test]
#[ignore = "run as a child process by mp_a_client_cut_off_while_alive_never_sees_its_blocks_in_another_file"]
fn mp_child_client_mapping_a_files_blocks_on_the_device() {
    use std::io::{BufRead as _, Write as _};
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes a signal number and no pointer:
    // a test aborted while this child is stopped leaves it no orphan.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    let c = common::serving::child_client();
    let f = c.open("/f", true, false, 0).unwrap();
    let mut b = [0u8; 1];
    f.read_at(&mut b, 0).unwrap();
    assert_eq!(b, [0xF0]);
    let bs = udax::BLOCK_SIZE as usize;
    let maps: Vec<(*mut u8, usize)> = f
        .extents()
        .unwrap()
        .into_iter()
        .map(|(_, dev_blk, n, _)| {
            // SAFETY: a fresh shared mapping of the device fd the owner
            // handed over, at the file's device blocks; nothing else uses
            // the address range.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    n as usize * bs,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED,
                    std::os::fd::AsRawFd::as_raw_fd(&c.device_fd()),
                    (dev_blk * udax::BLOCK_SIZE) as libc::off_t,
                )
            };
            assert_ne!(p, libc::MAP_FAILED);
            (p.cast::<u8>(), n as usize * bs)
        })
        .collect();
    let blocks: usize = maps.iter().map(|(_, n)| n / bs).sum();
    assert_eq!(blocks as u64, F_BLOCKS);
    eprintln!("ready");
    std::io::stderr().flush().unwrap();
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).unwrap();
    let mut seen = [0u64; 256];
    for &(p, n) in &maps {
        for i in 0..n {
            seen[peek(p, i) as usize] += 1;
        }
    }
    eprintln!("seen {} {} {}", seen[0xA5], seen[0xF0], seen[0]);
    for &(p, n) in &maps {
        for i in 0..n {
            poke(p, i, 0xBB);
        }
    }
    eprintln!("stored");
    std::io::stderr().flush().unwrap();
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn mp_a_client_cut_off_while_alive_never_sees_its_blocks_in_another_file() {
    use std::io::{BufRead as _, Write as _};
    let _w = common::Watchdog::start(120, "cut off while alive");
    let s = setup(16);
    let o = serve_cutting_off(&s);
    let a = Client::connect(&s.dev, &opts(&s, true)).unwrap();
    let f = a.open("/f", true, true, 0o644).unwrap();
    f.write_at(&vec![0xF0; (F_BLOCKS * udax::BLOCK_SIZE) as usize], 0)
        .unwrap();
    f.sync_data().unwrap();
    let mut child = common::serving::spawn_child(
        &s,
        "mp_child_client_mapping_a_files_blocks_on_the_device",
        &[],
    );
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    child_says(&mut lines, "ready");
    let before = free_for_data(&a.statfs().unwrap());
    // B stops: it answers no recall.
    let pid = child.id();
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGSTOP) }, 0);
    wait_stopped(pid);
    let t = std::time::Instant::now();
    f.set_len(0).unwrap();
    assert!(
        t.elapsed() >= Duration::from_millis(250),
        "B was not cut off"
    );
    // The truncated blocks are held: not free while B lives.
    let after = free_for_data(&a.statfs().unwrap());
    assert!(
        after < before + F_BLOCKS / 2,
        "the blocks B may reach show as free: {before} -> {after}"
    );
    // Only what B may reach is held: a file B never had is freed at once.
    let x = a.open("/x", true, true, 0o644).unwrap();
    x.write_at(&vec![0x33; (F_BLOCKS * udax::BLOCK_SIZE) as usize], 0)
        .unwrap();
    x.set_len(0).unwrap();
    drop(x);
    assert!(
        free_for_data(&a.statfs().unwrap()) + F_BLOCKS / 8 >= after,
        "the blocks of a file B never had are held"
    );
    // A fills the device with another pattern: without the hold, it would
    // reuse the truncated blocks.
    let g = a.open("/g", true, true, 0o644).unwrap();
    let mut at = 0u64;
    for chunk in [1u64 << 20, 64 << 10, udax::BLOCK_SIZE] {
        let data = vec![0xA5u8; chunk as usize];
        while g.write_at(&data, at).is_ok() {
            at += chunk;
        }
    }
    assert!(at > 4 << 20, "only {at} bytes written");
    let full = free_for_data(&a.statfs().unwrap());
    // B runs again and reads what its mapping shows, then stores into it.
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGCONT) }, 0);
    writeln!(stdin, "go").unwrap();
    stdin.flush().unwrap();
    let seen = child_says(&mut lines, "seen");
    assert_eq!(seen[0], 0, "B saw A's new file's bytes: {seen:?}");
    assert_eq!(
        seen[1] + seen[2],
        F_BLOCKS * udax::BLOCK_SIZE,
        "B saw other bytes: {seen:?}"
    );
    child_says(&mut lines, "stored");
    // B's stores are in no file of A's.
    let mut buf = vec![0u8; 1 << 20];
    let mut off = 0;
    while off < at {
        let n = g.read_at(&mut buf, off).unwrap();
        assert!(n > 0);
        assert!(
            buf[..n].iter().all(|&x| x == 0xA5),
            "B's stores landed in A's file near {off}"
        );
        off += n as u64;
    }
    // B dies: the blocks held for it are free again, and reused.
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
    child.wait().unwrap();
    let t = std::time::Instant::now();
    while free_for_data(&a.statfs().unwrap()) < full + F_BLOCKS {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "the held blocks stay held after B died: {full} -> {}",
            free_for_data(&a.statfs().unwrap())
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let h = a.open("/h", true, true, 0o644).unwrap();
    let data = vec![0x11u8; (F_BLOCKS * udax::BLOCK_SIZE) as usize];
    h.write_at(&data, 0).unwrap();
    let mut back = vec![0u8; data.len()];
    assert_eq!(h.read_at(&mut back, 0).unwrap(), data.len());
    assert!(back == data);
    drop((f, g, h, a));
    drop(o);
    let d = device::open(s.dev.to_str().unwrap(), &DevOpen::default()).unwrap();
    let r = udax::fs::fsck(d).unwrap();
    assert!(r.clean, "{r:?}");
}

/// The blocks held for a client cut off while its process lives are held
/// in the owner's memory only, so an owner with no clients left does not
/// exit idle while such a process lives (a next owner would hand the
/// blocks out under its mappings): it stays past its idle time, and exits
/// once that process is gone.
#[test]
fn mp_an_owner_stays_past_its_idle_time_while_a_client_it_cut_off_lives() {
    use std::io::BufRead as _;
    let _w = common::Watchdog::start(120, "idle with a cut-off client");
    let s = setup(16);
    let idle = Duration::from_millis(300);
    let mut o = serve_cutting_off_idle(&s, Some(idle));
    let a = Client::connect(&s.dev, &opts(&s, true)).unwrap();
    let f = a.open("/f", true, true, 0o644).unwrap();
    f.write_at(&vec![0xF0; (F_BLOCKS * udax::BLOCK_SIZE) as usize], 0)
        .unwrap();
    f.sync_data().unwrap();
    let mut child = common::serving::spawn_child(
        &s,
        "mp_child_client_mapping_a_files_blocks_on_the_device",
        &[],
    );
    let _stdin = child.stdin.take().unwrap();
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    child_says(&mut lines, "ready");
    let pid = child.id();
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGSTOP) }, 0);
    wait_stopped(pid);
    let t = std::time::Instant::now();
    f.set_len(0).unwrap();
    assert!(
        t.elapsed() >= Duration::from_millis(250),
        "B was not cut off"
    );
    drop((f, a));
    // Ten idle times with no client: the owner still serves.
    std::thread::sleep(idle * 10);
    let thread = o.thread.as_ref().unwrap();
    assert!(
        !thread.is_finished(),
        "the owner exited idle while the client it cut off lives"
    );
    let b = Client::connect(&s.dev, &opts(&s, false)).unwrap();
    b.stat("/f").unwrap();
    drop(b);
    // B dies: the owner exits within an idle time and a wake of its loop.
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
    child.wait().unwrap();
    let t = std::time::Instant::now();
    while !o.thread.as_ref().unwrap().is_finished() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the owner did not exit idle after the cut-off client died"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    o.thread.take().unwrap().join().unwrap().unwrap();
    let d = device::open(s.dev.to_str().unwrap(), &DevOpen::default()).unwrap();
    let r = udax::fs::fsck(d).unwrap();
    assert!(r.clean, "{r:?}");
}

/// The body of `mp_a_client_cut_off_after_its_process_exited_holds_nothing_back`,
/// run as its child process: a client that opens `/f` (taking its lease),
/// forks a process that keeps its connections open (and answers nothing:
/// no listener thread crosses a fork), says "ready <that pid>" and exits.
#[test]
#[ignore = "run as a child process by mp_a_client_cut_off_after_its_process_exited_holds_nothing_back"]
fn mp_child_client_leaving_its_connections_to_a_forked_process() {
    use std::io::Write as _;
    let c = common::serving::child_client();
    let f = c.open("/f", true, false, 0).unwrap();
    let mut b = [0u8; 1];
    f.read_at(&mut b, 0).unwrap();
    // SAFETY: the forked child only calls pause(2) (async-signal-safe)
    // until it is killed.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        loop {
            // SAFETY: as above.
            unsafe { libc::pause() };
        }
    }
    assert!(pid > 0);
    eprintln!("ready {pid}");
    std::io::stderr().flush().unwrap();
    std::process::exit(0);
}

#[test]
fn mp_a_client_cut_off_after_its_process_exited_holds_nothing_back() {
    use std::io::BufRead as _;
    let _w = common::Watchdog::start(120, "cut off after exit");
    let s = setup(16);
    let o = serve_cutting_off(&s);
    let a = Client::connect(&s.dev, &opts(&s, true)).unwrap();
    let f = a.open("/f", true, true, 0o644).unwrap();
    f.write_at(&vec![0xF0; (F_BLOCKS * udax::BLOCK_SIZE) as usize], 0)
        .unwrap();
    let mut child = common::serving::spawn_child(
        &s,
        "mp_child_client_leaving_its_connections_to_a_forked_process",
        &[],
    );
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let keeper = child_says(&mut lines, "ready")[0] as i32;
    struct Kill(i32);
    impl Drop for Kill {
        fn drop(&mut self) {
            // SAFETY: signalling the process our child forked.
            unsafe { libc::kill(self.0, libc::SIGKILL) };
        }
    }
    let _keeper = Kill(keeper);
    assert!(child.wait().unwrap().success());
    let before = free_for_data(&a.statfs().unwrap());
    let t = std::time::Instant::now();
    f.set_len(0).unwrap();
    assert!(
        t.elapsed() >= Duration::from_millis(250),
        "B was not cut off"
    );
    // Its process is gone: nothing is held for it.
    assert!(
        free_for_data(&a.statfs().unwrap()) >= before + F_BLOCKS,
        "blocks were held for a dead process"
    );
    drop((f, a));
    drop(o);
}

/// A library program forks (no shim): in the child, the parent's
/// connection refuses calls with ENOTCONN instead of sending on the
/// parent's sockets, and lets go of the device at that first use (its
/// descriptor names `/dev/null`); dropping it there leaves the parent's
/// connection whole: the parent still reads, writes, and answers the
/// recall another client's truncate makes.
#[test]
fn mp_a_forked_child_of_a_library_client_lets_go_of_the_device_and_leaves_the_parents_connection_alone(
) {
    let _w = common::Watchdog::start(60, "fork of a library client");
    let s = setup(16);
    let _o = serve(&s, None);
    let a = Client::connect(&s.dev, &opts(&s, true)).unwrap();
    let f = a.open("/f", true, true, 0o644).unwrap();
    f.write_at(&[7u8; 4096], 0).unwrap();
    let fd = a.device_fd().as_raw_fd();
    // SAFETY: the child reads through the client (its checks come before
    // any lock it takes), reads a link of /proc, and leaves with _exit.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let code = (|| {
            let mut b = [0u8; 16];
            match f.read_at(&mut b, 0) {
                Err(e) if e.errno() == libc::ENOTCONN => {}
                _ => return Some(3),
            }
            let target = std::fs::read_link(format!("/proc/self/fd/{fd}")).ok()?;
            if target != Path::new("/dev/null") {
                return Some(2);
            }
            drop(f);
            drop(a);
            Some(0)
        })()
        .unwrap_or(1);
        // SAFETY: ends the forked child without running the parent's
        // destructors or atexit handlers.
        unsafe { libc::_exit(code) };
    }
    assert!(pid > 0);
    let mut status = 0;
    // SAFETY: waits for the child forked above.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the child: status {status:#x} (3: a read through the parent's connection did not \
         refuse with ENOTCONN, 2: the device descriptor still names the device after it)"
    );
    let mut b = [0u8; 4096];
    assert_eq!(f.read_at(&mut b, 0).unwrap(), 4096);
    assert_eq!(b, [7u8; 4096]);
    f.write_at(&[8u8; 16], 0).unwrap();
    let other = Client::connect(&s.dev, &opts(&s, true)).unwrap();
    let g = other.open("/f", true, false, 0).unwrap();
    g.write_at(&[9u8; 16], 16).unwrap();
    // A truncate recalls every layout of the file: `a`'s listener answers.
    g.set_len(32).unwrap();
    assert!(!a.is_closed(), "the parent's connection was ended");
    assert_eq!(f.read_at(&mut b, 0).unwrap(), 32);
    assert_eq!(&b[..32], &[[8u8; 16], [9u8; 16]].concat()[..]);
    assert_eq!(a.stat("/f").unwrap().size, 32);
    assert_eq!(a.recalls(), 1, "the recall reached the parent");
}
