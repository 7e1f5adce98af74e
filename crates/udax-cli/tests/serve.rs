//! `udax serve` and the CLI as a client of a device's owner, with real
//! processes (issue 17, first slice; docs/multiprocess.md).

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

struct Env {
    dir: tempfile::TempDir,
    dev: String,
    run: PathBuf,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir_in("/dev/shm").unwrap();
        // Others may traverse (the unprivileged client of one test).
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let dev = dir.path().join("u.img").to_str().unwrap().to_string();
        let run = dir.path().join("run");
        let e = Env { dir, dev, run };
        e.ok(&["mkfs", &e.dev, "--size", "64M"]);
        e
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_udax"));
        c.args(args)
            .env_remove("UDAX_DEVICE")
            .env("UDAX_RUNTIME_DIR", &self.run);
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run udax")
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "udax {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Run `udax ARGS` as user and group 65534 (nobody), through the owner
    /// (the socket's directory and the socket opened to it).
    fn as_nobody(&self, args: &[&str]) -> Output {
        if let Some(sock) = self.socket(Duration::ZERO) {
            std::fs::set_permissions(&self.run, std::fs::Permissions::from_mode(0o755)).unwrap();
            std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).unwrap();
        }
        Command::new("setpriv")
            .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
            .arg(env!("CARGO_BIN_EXE_udax"))
            .args(args)
            .env_remove("UDAX_DEVICE")
            .env("UDAX_RUNTIME_DIR", &self.run)
            .output()
            .expect("setpriv (util-linux)")
    }

    fn at(&self, p: &str) -> String {
        format!("{}:{p}", self.dev)
    }

    /// The one socket in the runtime directory, once it exists.
    fn socket(&self, within: Duration) -> Option<PathBuf> {
        let t = Instant::now();
        loop {
            if let Ok(rd) = std::fs::read_dir(&self.run) {
                for e in rd.flatten() {
                    if e.path().extension().is_some_and(|x| x == "sock") {
                        return Some(e.path());
                    }
                }
            }
            if t.elapsed() >= within {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `udax serve --foreground` as a child; waits until its socket answers.
    fn serve_foreground(&self, idle: &str) -> Owner {
        let child = self
            .cmd(&["serve", "--foreground", "--idle", idle, &self.dev])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let o = Owner(child);
        let t = Instant::now();
        while !self.socket(Duration::ZERO).is_some_and(|p| answers(&p)) {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "the owner does not answer"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        o
    }
}

/// Whether a listener accepts connections at `p` (a stale socket file
/// refuses them).
fn answers(p: &std::path::Path) -> bool {
    use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
    let Ok(s) = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    ) else {
        return false;
    };
    SocketAddrUnix::new(p).is_ok_and(|a| rustix::net::connect(&s, &a).is_ok())
}

/// An owner process, killed if a test fails before it stops it.
struct Owner(Child);

impl Owner {
    fn term(mut self) -> std::process::ExitStatus {
        // SAFETY: kill(2) on the pid of our own child, which has not been
        // reaped (we hold the Child), so the pid is not reused.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        wait_for(&mut self.0, Duration::from_secs(20))
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for(c: &mut Child, within: Duration) -> std::process::ExitStatus {
    let t = Instant::now();
    loop {
        if let Some(st) = c.try_wait().unwrap() {
            return st;
        }
        assert!(t.elapsed() < within, "process {} did not exit", c.id());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn mp_cli_commands_go_through_the_owner_while_it_holds_the_device() {
    let e = Env::new();
    let host = e.dir.path().join("host.bin");
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(&host, &data).unwrap();
    e.ok(&["cp", host.to_str().unwrap(), &e.at("/data")]);
    let o = e.serve_foreground("0");
    // Data read straight from the device under a lease.
    let cat = e.cmd(&["cat", &e.at("/data")]).output().unwrap();
    assert!(
        cat.status.success(),
        "{}",
        String::from_utf8_lossy(&cat.stderr)
    );
    assert!(cat.stdout == data, "cat through the owner");
    e.ok(&["mkdir", "-p", &e.at("/a/b")]);
    e.ok(&["mkdir", &e.at("/c")]);
    e.ok(&["mv", &e.at("/c"), &e.at("/a/d")]);
    let ls = e.ok(&["ls", &e.at("/a")]);
    assert_eq!(ls.lines().collect::<Vec<_>>(), ["b", "d"], "{ls}");
    let ls = e.ok(&["ls", "-l", &e.at("/a")]);
    assert!(ls.contains("drwxr-xr-x"), "{ls}");
    let st = e.ok(&["stat", "--json", &e.at("/a/b")]);
    let v: serde_json::Value = serde_json::from_str(&st).unwrap();
    assert_eq!(v["mode"].as_u64().unwrap() & 0o170000, 0o040000);
    assert!(e
        .ok(&["stat", &e.at("/a")])
        .contains("served by the device's owner"));
    assert!(e.ok(&["df", &e.dev]).contains("use%"));
    e.ok(&["rm", "-r", &e.at("/a/d")]);
    // cp in and out through the owner.
    e.ok(&["cp", host.to_str().unwrap(), &e.at("/copy")]);
    let back = e.dir.path().join("back.bin");
    e.ok(&["cp", &e.at("/copy"), back.to_str().unwrap()]);
    assert!(
        std::fs::read(&back).unwrap() == data,
        "cp through the owner"
    );
    // stat --mmap maps the file in the CLI (a client of the owner) and
    // reports its own fault engine's counters, and the extents of its lease.
    let st = e.ok(&["stat", "--mmap", "--json", &e.at("/copy")]);
    let v: serde_json::Value = serde_json::from_str(&st).unwrap();
    assert!(v["mmap"]["faults"].as_u64().unwrap() > 0, "{st}");
    assert!(!v["extents"].as_array().unwrap().is_empty(), "{st}");
    assert!(e.ok(&["stat", "--mmap", &e.at("/copy")]).contains("mmap:"));
    // cat reads through a lease: a directory is refused as the kernel would.
    let cat = e.run(&["cat", &e.at("/a")]);
    assert!(!cat.status.success());
    assert!(o.term().success(), "the owner exits 0 on SIGTERM");
    assert!(e.socket(Duration::ZERO).is_none(), "socket removed");
    // The device is free again; the changes are there.
    let ls = e.ok(&["ls", &e.at("/a")]);
    assert_eq!(ls.lines().collect::<Vec<_>>(), ["b"], "{ls}");
    let fsck = e.ok(&["fsck", "--json", &e.dev]);
    let v: serde_json::Value = serde_json::from_str(&fsck).unwrap();
    assert_eq!(v["clean"], true, "{fsck}");
}

#[test]
fn mp_serve_detaches_and_exits_when_idle() {
    let e = Env::new();
    let out = e.ok(&["serve", "--idle", "3", &e.dev]);
    let _ = out;
    let sock = e
        .socket(Duration::ZERO)
        .expect("socket exists when serve returns");
    e.ok(&["mkdir", &e.at("/x")]);
    // A second `serve` finds it running.
    let again = e.run(&["serve", &e.dev]);
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already served"));
    // Idle for three seconds: it checkpoints and exits, and the device is free.
    let t = Instant::now();
    while sock.exists() {
        assert!(t.elapsed() < Duration::from_secs(20), "owner still running");
        std::thread::sleep(Duration::from_millis(50));
    }
    let t = Instant::now();
    loop {
        let o = e.run(&["ls", &e.at("/")]);
        if o.status.success() {
            assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "x");
            break;
        }
        // The socket goes first, the device lock a moment later.
        assert!(t.elapsed() < Duration::from_secs(20), "device still busy");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn mp_serve_of_a_device_in_use_fails_with_the_holder() {
    let e = Env::new();
    let _o = e.serve_foreground("0");
    let o = e.run(&["serve", "--foreground", &e.dev]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("busy"));
}

/// The owner admits for writing only a peer that could open the device file
/// for writing: a user who may read a 0644 device lists it through the
/// owner but cannot change it, even with the socket opened to everyone.
#[test]
fn mp_an_unprivileged_peer_is_admitted_only_as_far_as_the_device_mode_allows() {
    if !rustix::process::getuid().is_root() {
        eprintln!("skipped: needs root to run a client as another user (CI runs as root)");
        return;
    }
    let e = Env::new();
    std::fs::set_permissions(&e.dev, std::fs::Permissions::from_mode(0o644)).unwrap();
    let _o = e.serve_foreground("0");
    e.ok(&["mkdir", &e.at("/mine")]);
    let ls = e.as_nobody(&["ls", &e.at("/")]);
    assert!(
        ls.status.success(),
        "{}",
        String::from_utf8_lossy(&ls.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&ls.stdout).trim(), "mine");
    let mk = e.as_nobody(&["mkdir", &e.at("/theirs")]);
    assert!(!mk.status.success());
    let err = String::from_utf8_lossy(&mk.stderr);
    assert!(err.contains("may not open"), "{err}");
    assert!(
        !e.ok(&["ls", &e.at("/")]).contains("theirs"),
        "nothing was created"
    );
}

#[test]
fn mp_the_owner_enforces_mode_bits_with_the_callers_uid_and_gives_it_its_files() {
    if !rustix::process::getuid().is_root() {
        eprintln!("skipped: needs root to run a client as another user (CI runs as root)");
        return;
    }
    let e = Env::new();
    // Anyone may open the device read-write: the mode bits of the files
    // inside are what keeps "nobody" out of root's directories.
    std::fs::set_permissions(&e.dev, std::fs::Permissions::from_mode(0o666)).unwrap();
    e.ok(&["mkdir", &e.at("/root")]);
    e.ok(&["mkdir", &e.at("/pub")]);
    {
        let d = udax::device::open(&e.dev, &Default::default()).unwrap();
        let fs = udax::fs::Fs::mount(d).unwrap();
        fs.set_permissions("/pub", 0o777).unwrap();
        fs.unmount().unwrap();
    }
    let _o = e.serve_foreground("0");
    let mk = e.as_nobody(&["mkdir", &e.at("/root/x")]);
    assert!(!mk.status.success());
    let err = String::from_utf8_lossy(&mk.stderr);
    assert!(err.contains("ermission denied"), "{err}");
    let rm = e.as_nobody(&["rm", "-r", &e.at("/root")]);
    assert!(!rm.status.success(), "removed root's directory from /");
    let mk = e.as_nobody(&["mkdir", &e.at("/pub/n")]);
    assert!(
        mk.status.success(),
        "{}",
        String::from_utf8_lossy(&mk.stderr)
    );
    let st = e.ok(&["stat", "--json", &e.at("/pub/n")]);
    let v: serde_json::Value = serde_json::from_str(&st).unwrap();
    assert_eq!(v["uid"], 65534, "{st}");
    assert_eq!(v["gid"], 65534, "{st}");
    assert!(e.ok(&["ls", &e.at("/")]).contains("root"));
}

/// A client killed while it holds a file open (unlinked) and a lease on it:
/// the owner sees its connection end, closes its files (the blocks come
/// back) and drops its leases (a truncate does not wait for its answer).
#[test]
fn mp_kill_9_of_a_client_holding_a_lease_and_an_open_file_leaves_nothing_held() {
    let e = Env::new();
    let host = e.dir.path().join("big.bin");
    std::fs::write(&host, vec![5u8; 8 << 20]).unwrap();
    e.ok(&["cp", host.to_str().unwrap(), &e.at("/big")]);
    e.ok(&["cp", host.to_str().unwrap(), &e.at("/other")]);
    let _o = e.serve_foreground("0");
    let free = |e: &Env| -> u64 {
        let df = e.ok(&["df", &e.dev]);
        let line = df.lines().nth(1).unwrap().to_string();
        line.split_whitespace().nth(3).unwrap().parse().unwrap()
    };
    // `cat` through the owner into a pipe nobody reads: it blocks holding
    // the file open and a lease on its layout.
    let mut cat = e
        .cmd(&["cat", &e.at("/big")])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Its first bytes show it has the file open and a lease; then it blocks
    // on the pipe we stop reading.
    let mut head = [0u8; 4096];
    std::io::Read::read_exact(cat.stdout.as_mut().unwrap(), &mut head).unwrap();
    assert!(head.iter().all(|&b| b == 5));
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        cat.try_wait().unwrap().is_none(),
        "cat blocks on the full pipe"
    );
    e.ok(&["rm", &e.at("/big")]);
    let held = free(&e);
    // SAFETY: kill(2) on our own unreaped child.
    unsafe { libc::kill(cat.id() as i32, libc::SIGKILL) };
    let _ = cat.wait();
    let t = Instant::now();
    loop {
        if free(&e) >= held + (8 << 10) {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the killed client's file was not closed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let fsck_later = e.ok(&["ls", &e.at("/")]);
    assert_eq!(fsck_later.trim(), "other");
}

/// The owner killed with SIGKILL: the device is free again (the flock died
/// with it), what it acknowledged is there, and a new owner replaces its
/// stale socket.
#[test]
fn mp_kill_9_of_the_owner_frees_the_device_and_a_new_owner_recovers() {
    let e = Env::new();
    let mut o = e.serve_foreground("0");
    e.ok(&["mkdir", &e.at("/before")]);
    o.0.kill().unwrap();
    let _ = o.0.wait();
    // No owner answers: the CLI mounts the device itself (the flock died
    // with the owner) and sees what the owner had acknowledged.
    let ls = e.ok(&["ls", &e.at("/")]);
    assert_eq!(ls.trim(), "before");
    // The stale socket is replaced by the next owner.
    let _o2 = e.serve_foreground("0");
    e.ok(&["mkdir", &e.at("/after")]);
    let ls = e.ok(&["ls", &e.at("/")]);
    assert_eq!(ls.lines().collect::<Vec<_>>(), ["after", "before"], "{ls}");
}

#[test]
fn e3_inject_poison_goes_through_the_owner_and_reads_get_eio() {
    let e = Env::new();
    let host = e.dir.path().join("host.bin");
    std::fs::write(&host, vec![0x3Cu8; 64 << 10]).unwrap();
    e.ok(&["cp", host.to_str().unwrap(), &e.at("/f")]);
    let st = e.ok(&["stat", "--json", &e.at("/f")]);
    let v: serde_json::Value = serde_json::from_str(&st).unwrap();
    let dev_blk = v["extents"][0]["dev_blk"].as_u64().expect("an extent");
    let o = e.serve_foreground("0");
    let out = e.ok(&[
        "inject-poison",
        &e.dev,
        &(dev_blk * 4096 + 4096).to_string(),
        "512",
    ]);
    assert!(out.contains("through the owner; 1 file page(s)"), "{out}");
    // A client's read of the file stops at the lost page: EIO.
    let cat = e.run(&["cat", &e.at("/f")]);
    assert!(!cat.status.success());
    assert!(
        String::from_utf8_lossy(&cat.stderr).contains("error"),
        "{}",
        String::from_utf8_lossy(&cat.stderr)
    );
    assert!(o.term().success());
    // The error is recorded: an embedded mount knows the page is bad.
    let st = e.ok(&["stat", "--json", &e.at("/f")]);
    let v: serde_json::Value = serde_json::from_str(&st).unwrap();
    assert_eq!(v["poisoned"], serde_json::json!([[4096, 4096]]), "{st}");
}
