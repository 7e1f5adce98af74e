//! `udax mount` (issue 19, docs/fuse.md): real kernel mounts through
//! /dev/fuse, real programs on them, and the owner behind them.
//!
//! Each test mounts a fresh device in a directory of its own, runs every
//! program under a deadline (a FUSE server that never answers must fail a
//! test, not hang it), and its guard detaches the mount and stops the owner
//! whatever happens. Where FUSE cannot be used here (no /dev/fuse, not root
//! and no fusermount3) a test says why and passes, unless
//! `UDAX_REQUIRE_FUSE=1` (set by .ci/run), when it fails.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Why FUSE cannot be used here, if it cannot.
fn fuse_missing() -> Option<String> {
    if !Path::new("/dev/fuse").exists() {
        return Some("/dev/fuse does not exist (no fuse module)".into());
    }
    if !rustix::process::geteuid().is_root() && which("fusermount3").is_none() {
        return Some("not root and no fusermount3 (package fuse3)".into());
    }
    None
}

fn which(prog: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(prog))
            .find(|f| f.is_file())
    })
}

/// Whether this test can run; says why not (or fails under
/// `UDAX_REQUIRE_FUSE=1`).
fn fuse_ready(test: &str) -> bool {
    match fuse_missing() {
        None => true,
        Some(why) => {
            if std::env::var("UDAX_REQUIRE_FUSE").as_deref() == Ok("1") {
                panic!("{test}: {why}, and UDAX_REQUIRE_FUSE=1");
            }
            eprintln!("SKIP {test}: {why} (set UDAX_REQUIRE_FUSE=1 to make this a failure)");
            false
        }
    }
}

/// Whether `prog` is installed; says why not (or fails under
/// `UDAX_REQUIRE_PROGRAMS=1`, as the shim's tests).
fn have(test: &str, prog: &str) -> bool {
    if which(prog).is_some() {
        return true;
    }
    if std::env::var("UDAX_REQUIRE_PROGRAMS").as_deref() == Ok("1") {
        panic!("{test}: {prog} is not installed and UDAX_REQUIRE_PROGRAMS=1");
    }
    eprintln!("SKIP {test}: {prog} is not installed");
    false
}

/// A deadline for each program run on the mount.
const DEADLINE: Duration = Duration::from_secs(60);

/// Run `cmd` to its end within `within`; killed (and the test failed) past
/// it. Output goes through files: a pipe left open by a grandchild cannot
/// keep the test waiting.
fn run_within(mut cmd: Command, within: Duration) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let (o, e) = (dir.path().join("out"), dir.path().join("err"));
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&o).unwrap())
        .stderr(std::fs::File::create(&e).unwrap())
        .spawn()
        .unwrap_or_else(|err| panic!("{what}: {err}"));
    let status = wait_within(&mut child, within)
        .unwrap_or_else(|| panic!("{what} did not finish within {within:?} (killed)"));
    Output {
        status,
        stdout: std::fs::read(&o).unwrap(),
        stderr: std::fs::read(&e).unwrap(),
    }
}

/// The exit status of `c`, or `None` (and `c` killed) past `within`.
fn wait_within(c: &mut Child, within: Duration) -> Option<std::process::ExitStatus> {
    let t = Instant::now();
    loop {
        if let Some(st) = c.try_wait().unwrap() {
            return Some(st);
        }
        if t.elapsed() > within {
            let _ = c.kill();
            let _ = c.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A device, a mount point and a runtime directory of their own; the mount
/// is detached and the owner stopped when it drops.
struct Mount {
    _dir: tempfile::TempDir,
    dev: String,
    run: PathBuf,
    at: PathBuf,
}

impl Mount {
    /// A fresh device mounted with `options` (the owner started by the
    /// mount).
    fn new(options: &str) -> Mount {
        let dir = tempfile::tempdir_in("/dev/shm").unwrap();
        // Others may traverse (the unprivileged users of some tests).
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let dev = dir.path().join("u.img").to_str().unwrap().to_string();
        let run = dir.path().join("run");
        let at = dir.path().join("mnt");
        std::fs::create_dir(&at).unwrap();
        let m = Mount {
            _dir: dir,
            dev,
            run,
            at,
        };
        m.udax_ok(&["mkfs", &m.dev, "--size", "256M"]);
        m.mount(options);
        m
    }

    fn udax(&self, args: &[&str]) -> Output {
        let mut c = Command::new(env!("CARGO_BIN_EXE_udax"));
        c.args(args)
            .env_remove("UDAX_DEVICE")
            .env("UDAX_RUNTIME_DIR", &self.run);
        run_within(c, DEADLINE)
    }

    fn udax_ok(&self, args: &[&str]) -> String {
        let o = self.udax(args);
        assert!(o.status.success(), "udax {args:?}: {}", text(&o.stderr));
        text(&o.stdout)
    }

    fn mount(&self, options: &str) {
        let at = self.at.to_str().unwrap();
        if options.is_empty() {
            self.udax_ok(&["mount", &self.dev, at]);
        } else {
            self.udax_ok(&["mount", &self.dev, at, "-o", options]);
        }
    }

    /// `sh -c SCRIPT` in the mount, which must succeed; its stdout.
    fn sh(&self, script: &str) -> String {
        let o = self.sh_output(script);
        assert!(
            o.status.success(),
            "sh -c {script:?}: {}\n{}",
            o.status,
            text(&o.stderr)
        );
        text(&o.stdout)
    }

    fn sh_output(&self, script: &str) -> Output {
        let mut c = Command::new("sh");
        c.arg("-c").arg(script).current_dir(&self.at);
        run_within(c, DEADLINE)
    }

    /// The pid of the device's owner (the peer of its socket).
    fn owner_pid(&self) -> i32 {
        let sock = std::fs::read_dir(&self.run)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "sock"))
            .expect("the owner's socket");
        let s = std::os::unix::net::UnixStream::connect(&sock)
            .or_else(|_| {
                // SOCK_SEQPACKET: std connects streams only.
                let fd = rustix::net::socket(
                    rustix::net::AddressFamily::UNIX,
                    rustix::net::SocketType::SEQPACKET,
                    None,
                )?;
                rustix::net::connect(&fd, &rustix::net::SocketAddrUnix::new(&sock)?)?;
                Ok::<_, std::io::Error>(std::os::unix::net::UnixStream::from(fd))
            })
            .expect("connect to the owner");
        let cred = rustix::net::sockopt::socket_peercred(&s).unwrap();
        cred.pid.as_raw_nonzero().get()
    }

    fn path(&self, p: &str) -> PathBuf {
        self.at.join(p)
    }

    /// A library client of the mount's owner.
    fn client(&self) -> udax::client::Client {
        udax::client::Client::connect(
            Path::new(&self.dev),
            &udax::client::ConnectOptions {
                runtime_dir: Some(self.run.clone()),
                ..Default::default()
            },
        )
        .unwrap()
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        // Detached whatever state it is in (a hung server too), then the
        // owner stopped (SIGTERM, then its socket gone).
        if rustix::process::geteuid().is_root() {
            let _ = rustix::mount::unmount(&self.at, rustix::mount::UnmountFlags::DETACH);
        } else {
            let _ = Command::new("fusermount3")
                .args(["-u", "-z", "--"])
                .arg(&self.at)
                .stderr(Stdio::null())
                .status();
        }
        let _ = udax::client::stop_owner(
            Path::new(&self.dev),
            Some(&self.run),
            Duration::from_secs(10),
        );
    }
}

#[test]
fn fuse_coreutils_tar_find_and_the_cli_agree() {
    if !fuse_ready("fuse_coreutils_tar_find_and_the_cli_agree") {
        return;
    }
    let m = Mount::new("");
    assert_eq!(
        m.sh("echo hello > a && cat a && ls && mkdir -p d/e && mv a d/e/b && ls d/e && cat d/e/b"),
        "hello\na\nb\nhello\n"
    );
    // A tree with a big file (a write of more than one request), copied in
    // and out with cp -a, tar and find.
    let src = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(src.path().join("t/sub")).unwrap();
    let big: Vec<u8> = (0..5_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(src.path().join("t/big"), &big).unwrap();
    std::fs::write(src.path().join("t/sub/small"), b"small\n").unwrap();
    std::fs::set_permissions(
        src.path().join("t/sub/small"),
        std::fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    let s = src.path().display();
    m.sh(&format!("cp -a {s}/t ./t"));
    assert_eq!(std::fs::read(m.path("t/big")).unwrap(), big);
    let meta = std::fs::metadata(m.path("t/sub/small")).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o640, "cp -a kept the mode");
    assert_eq!(
        meta.mtime(),
        std::fs::metadata(src.path().join("t/sub/small"))
            .unwrap()
            .mtime(),
        "cp -a kept the time"
    );
    assert_eq!(m.sh("find t | sort"), "t\nt/big\nt/sub\nt/sub/small\n");
    assert_eq!(m.sh("find . -name small -type f"), "./t/sub/small\n");
    m.sh("tar cf t.tar t && mkdir x && tar xf t.tar -C x && cmp t/big x/t/big && cmp t/sub/small x/t/sub/small");
    m.sh("rm -r x t.tar && mv t/big t/big2 && rm t/sub/small && rmdir t/sub");
    assert_eq!(m.sh("ls -A t d"), "d:\ne\n\nt:\nbig2\n");
    let e = m.sh_output("cat t/big");
    assert!(!e.status.success() && text(&e.stderr).contains("No such file"));
    // The CLI, a client of the same owner, sees what the mount wrote.
    assert_eq!(m.udax_ok(&["cat", &format!("{}:/d/e/b", m.dev)]), "hello\n");
    let ls = m.udax_ok(&["ls", &format!("{}:/t", m.dev)]);
    assert_eq!(ls.trim(), "big2");
    // And df agrees with the kernel's statfs.
    let st = rustix::fs::statfs(&m.at).unwrap();
    assert_eq!(st.f_bsize, 4096);
    assert!(st.f_blocks > 0 && st.f_bfree < st.f_blocks);
}

#[test]
fn fuse_fifos_pipe_and_device_nodes_do_not_open_on_the_nodev_mount() {
    if !fuse_ready("fuse_fifos_pipe_and_device_nodes_do_not_open_on_the_nodev_mount") {
        return;
    }
    let m = Mount::new("");
    // A FIFO on the mount is a pipe between the processes that open it.
    assert_eq!(
        m.sh("mkfifo p && (echo through > p &) && cat p"),
        "through\n"
    );
    assert_eq!(m.sh("stat -c %F p"), "fifo\n");
    m.sh("mknod n c 1 3 && mknod b b 8 1");
    assert_eq!(m.sh("stat -c '%F %t,%T' n"), "character special file 1,3\n");
    assert_eq!(m.sh("stat -c '%F %t,%T' b"), "block special file 8,1\n");
    let e = m.sh_output("cat n");
    assert!(
        !e.status.success() && text(&e.stderr).contains("Permission denied"),
        "a device node does not open on a nodev mount: {}",
        text(&e.stderr)
    );
    // The CLI sees the same inodes.
    let ls = m.udax_ok(&["ls", "-l", &format!("{}:/", m.dev)]);
    assert!(
        ls.lines().any(|l| l.starts_with('p') && l.ends_with(" p")),
        "{ls}"
    );
    assert!(
        ls.lines().any(|l| l.starts_with('c') && l.ends_with(" n")),
        "{ls}"
    );
    m.sh("rm p n b");
}

#[test]
fn fuse_symlinks_are_made_read_and_followed_by_the_kernel() {
    if !fuse_ready("fuse_symlinks_are_made_read_and_followed_by_the_kernel") {
        return;
    }
    let m = Mount::new("");
    m.sh("mkdir -p d/e && echo hi > d/e/b && ln -s d/e/b l && ln -s e d/le");
    assert_eq!(m.sh("readlink l && cat l && cat d/le/b"), "d/e/b\nhi\nhi\n");
    assert_eq!(m.sh("stat -c %F l"), "symbolic link\n");
    assert_eq!(m.sh("find . -type l | sort"), "./d/le\n./l\n");
    // `..` after a link goes up from where it led (d/e/.. = d).
    assert_eq!(m.sh("ls d/le/.."), "e\nle\n");
    // A long target (in a data block), and one that leaves the mount.
    let long = "x/".repeat(200);
    m.sh(&format!(
        "ln -s {long} long && readlink long > t && rm long"
    ));
    assert_eq!(m.sh("cat t").trim_end(), long);
    m.sh("ln -s /etc/hostname host");
    assert_eq!(
        m.sh("cat host"),
        std::fs::read_to_string("/etc/hostname").unwrap()
    );
    // The CLI sees the same links; rm removes the link, not its target.
    assert_eq!(m.udax_ok(&["cat", &format!("{}:/l", m.dev)]), "hi\n");
    assert_eq!(m.sh("rm l d/le && cat d/e/b && ls -A d"), "hi\ne\n");
}

#[test]
fn fuse_sqlite3_creates_inserts_and_selects() {
    let t = "fuse_sqlite3_creates_inserts_and_selects";
    if !fuse_ready(t) || !have(t, "sqlite3") {
        return;
    }
    let m = Mount::new("");
    m.sh("sqlite3 db 'CREATE TABLE t(x INTEGER, y TEXT);'");
    m.sh("for i in 1 2 3 4 5; do sqlite3 db \"INSERT INTO t VALUES ($i, 'row$i');\"; done");
    m.sh("sqlite3 db 'BEGIN; INSERT INTO t SELECT x + 5, y FROM t; COMMIT;'");
    assert_eq!(
        m.sh("sqlite3 db 'SELECT count(*), sum(x) FROM t; SELECT y FROM t WHERE x = 3;'"),
        "10|55\nrow3\n"
    );
    // WAL mode (a shared mapping of the -shm file through the mount).
    m.sh("sqlite3 wal 'PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES (42);'");
    assert_eq!(m.sh("sqlite3 wal 'SELECT x FROM t;'"), "42\n");
    assert_eq!(m.sh("sqlite3 db 'PRAGMA integrity_check;'"), "ok\n");
}

#[test]
fn fuse_git_init_add_commit_and_log() {
    let t = "fuse_git_init_add_commit_and_log";
    if !fuse_ready(t) || !have(t, "git") {
        return;
    }
    let m = Mount::new("");
    let out = m.sh(
        "export HOME=$PWD GIT_CONFIG_NOSYSTEM=1 && git init -q repo && cd repo && \
         git config user.email t@example.com && git config user.name T && \
         echo one > f && mkdir -p src && echo 'fn main() {}' > src/main.rs && \
         git add -A && git commit -qm first && echo two >> f && git commit -qam second && \
         git log --format=%s && git status --porcelain && git fsck --no-progress 2>&1 && \
         git show HEAD~1:f",
    );
    assert_eq!(out, "second\nfirst\none\n");
}

#[test]
fn fuse_a_static_binary_runs_from_the_mount() {
    let t = "fuse_a_static_binary_runs_from_the_mount";
    if !fuse_ready(t) || !have(t, "gcc") {
        return;
    }
    let m = Mount::new("");
    std::fs::write(
        m.path("w.c"),
        "#include <stdio.h>\nint main(int c, char **v) { FILE *f = fopen(v[1], \"w\"); \
         if (!f) return 1; fprintf(f, \"static %d\\n\", c); return fclose(f) != 0; }\n",
    )
    .unwrap();
    // Built on the mount (the compiler writes its output there), then run
    // from it: exec maps the text through the mount.
    let o = m.sh_output("gcc -static -O1 -o w w.c");
    if !o.status.success() && text(&o.stderr).contains("cannot find -lc") {
        if std::env::var("UDAX_REQUIRE_PROGRAMS").as_deref() == Ok("1") {
            panic!("{t}: no static libc (libc6-dev): {}", text(&o.stderr));
        }
        eprintln!("SKIP {t}: no static libc (libc6-dev)");
        return;
    }
    assert!(o.status.success(), "gcc: {}", text(&o.stderr));
    assert_eq!(m.sh("ldd w 2>&1 | grep -c 'not a dynamic'"), "1\n");
    m.sh("./w out a b");
    assert_eq!(
        std::fs::read_to_string(m.path("out")).unwrap(),
        "static 4\n"
    );
}

#[test]
fn fuse_dbench_2() {
    let t = "fuse_dbench_2";
    if !fuse_ready(t) || !have(t, "dbench") {
        return;
    }
    let m = Mount::new("");
    let out = m.sh("dbench -D . -t 3 2 2>&1");
    assert!(out.contains("Throughput"), "{out}");
    assert!(!out.contains("ERROR"), "{out}");
}

#[test]
fn fuse_kill_9_of_the_owner_gives_enotconn_until_mount_again() {
    if !fuse_ready("fuse_kill_9_of_the_owner_gives_enotconn_until_mount_again") {
        return;
    }
    let m = Mount::new("");
    std::fs::write(m.path("kept"), b"before\n").unwrap();
    let pid = m.owner_pid();
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    // A request in flight at the kill fails with ECONNABORTED; every one
    // after it with ENOTCONN.
    let t = Instant::now();
    let err = loop {
        match std::fs::metadata(m.path("kept")) {
            Err(e) if e.raw_os_error() != Some(libc::ECONNABORTED) => break e,
            _ => {
                assert!(t.elapsed() < Duration::from_secs(10), "still answering");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    };
    assert_eq!(err.raw_os_error(), Some(libc::ENOTCONN), "{err}");
    assert_eq!(
        std::fs::read_dir(&m.at).unwrap_err().raw_os_error(),
        Some(libc::ENOTCONN)
    );
    // A second mount while the first answers is refused; after the kill
    // the stale one is detached and replaced, by a new owner that
    // recovered the journal.
    m.mount("");
    assert_eq!(std::fs::read(m.path("kept")).unwrap(), b"before\n");
    let o = m.udax(&["mount", &m.dev, m.at.to_str().unwrap()]);
    assert!(!o.status.success(), "mounted twice");
    assert!(
        text(&o.stderr).contains("already a udax mount"),
        "{}",
        text(&o.stderr)
    );
    // And `udax umount` unmounts it.
    m.udax_ok(&["umount", m.at.to_str().unwrap()]);
    assert!(!std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .contains(m.at.to_str().unwrap()));
}

#[test]
fn fuse_a_mount_keeps_the_owner_until_unmounted() {
    if !fuse_ready("fuse_a_mount_keeps_the_owner_until_unmounted") {
        return;
    }
    let m = Mount::new("");
    m.udax_ok(&["umount", m.at.to_str().unwrap()]);
    // An owner of our own that exits after 1 s without clients.
    let _ = udax::client::stop_owner(Path::new(&m.dev), Some(&m.run), Duration::from_secs(10));
    let mut owner = Command::new(env!("CARGO_BIN_EXE_udax"))
        .args(["serve", "--foreground", "--idle", "1", &m.dev])
        .env("UDAX_RUNTIME_DIR", &m.run)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while std::fs::read_dir(&m.run)
        .map(|d| {
            !d.flatten()
                .any(|e| e.path().extension().is_some_and(|x| x == "sock"))
        })
        .unwrap_or(true)
    {
        assert!(t.elapsed() < Duration::from_secs(20), "no socket");
        std::thread::sleep(Duration::from_millis(20));
    }
    m.mount("");
    assert_eq!(
        m.owner_pid(),
        owner.id() as i32,
        "the mount joined the running owner"
    );
    std::thread::sleep(Duration::from_millis(2500));
    assert!(
        owner.try_wait().unwrap().is_none(),
        "the owner exited idle under a mount"
    );
    std::fs::write(m.path("f"), b"x").unwrap();
    m.udax_ok(&["umount", m.at.to_str().unwrap()]);
    let st = wait_within(&mut owner, Duration::from_secs(15))
        .expect("the owner did not exit idle after the unmount");
    assert!(st.success(), "{st}");
}

#[test]
fn fuse_each_caller_is_checked_with_its_own_credentials() {
    let t = "fuse_each_caller_is_checked_with_its_own_credentials";
    if !fuse_ready(t) || !have(t, "setpriv") {
        return;
    }
    if !rustix::process::geteuid().is_root() {
        eprintln!("SKIP {t}: needs root (to act as two users)");
        return;
    }
    let m = Mount::new("allow_other");
    m.sh("mkdir open closed && chmod 777 open && chmod 755 closed && echo secret > closed/s && chmod 600 closed/s");
    let nobody = |script: &str| {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
            "sh",
            "-c",
            script,
        ])
        .current_dir(&m.at);
        run_within(c, DEADLINE)
    };
    let o = nobody("echo mine > open/n && cat open/n");
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout), "mine\n");
    let meta = std::fs::metadata(m.path("open/n")).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid()),
        (65534, 65534),
        "the file is the caller's"
    );
    let o = nobody("echo x > closed/n");
    assert!(
        text(&o.stderr).contains("Permission denied"),
        "{}",
        text(&o.stderr)
    );
    let o = nobody("cat closed/s");
    assert!(
        text(&o.stderr).contains("Permission denied"),
        "{}",
        text(&o.stderr)
    );
    let o = nobody("chmod 777 closed");
    assert!(
        text(&o.stderr).contains("not permitted"),
        "{}",
        text(&o.stderr)
    );
    // chown: the file system's own answer (root may; nobody may not).
    m.sh("chown 65534:65534 closed/s");
    assert_eq!(std::fs::metadata(m.path("closed/s")).unwrap().uid(), 65534);
    let o = nobody("cat closed/s");
    assert!(o.status.success(), "{}", text(&o.stderr));
}

#[test]
fn fuse_and_a_dax_client_mapping_see_each_others_writes() {
    let t = "fuse_and_a_dax_client_mapping_see_each_others_writes";
    if !fuse_ready(t) {
        return;
    }
    if udax::engine_info().is_err() {
        eprintln!("SKIP {t}: no userfaultfd for a client's mapping");
        return;
    }
    let m = Mount::new("");
    // A file with a hole in the middle, written through the mount.
    let f = std::fs::File::create(m.path("shared")).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(&[1u8; 4096], 0).unwrap();
    f.set_len(3 * 4096).unwrap();
    drop(f);
    let c = m.client();
    let rf = c.open("/shared", true, false, 0).unwrap();
    let map = rf
        .mmap(0, 3 * 4096, udax::Prot::ReadWrite, udax::MapFlags::SHARED)
        .unwrap();
    let p = map.as_ptr();
    // SAFETY: `p` maps 3 pages of the file, alive while `map` is; the
    // other processes' stores reach it through the device, so volatile
    // accesses.
    let at = |i: usize| unsafe { p.add(i).read_volatile() };
    assert_eq!(
        (at(0), at(4096)),
        (1, 0),
        "data and the hole, in the mapping"
    );
    // A store in the mapping is read through the mount (direct I/O: no
    // kernel copy to go stale).
    // SAFETY: as above; page 0 is the file's block.
    unsafe { p.add(10).write_volatile(77) };
    let mut b = [0u8; 16];
    std::fs::File::open(m.path("shared"))
        .unwrap()
        .read_exact_at(&mut b, 0)
        .unwrap();
    assert_eq!(b[10], 77, "the mount reads the mapping's store");
    // A write through the mount into the hole (which the mapping shows as
    // the zero page) recalls the client's layout: the mapping sees it.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(m.path("shared"))
        .unwrap();
    f.write_all_at(&[9u8; 100], 4096 + 5).unwrap();
    assert_eq!(at(4096 + 5), 9, "the mapping sees the mount's hole fill");
    // An overwrite in place is seen at once.
    f.write_all_at(&[3u8], 20).unwrap();
    assert_eq!(at(20), 3);
    // A truncate through the mount reaches the client's lease too.
    f.set_len(4096).unwrap();
    assert_eq!(rf.len().unwrap(), 4096);
    drop(map);
}

/// A change made through the mount drops, in a client's attribute cache,
/// what it changed and nothing else (a client's own change is traced the
/// same way): the names a rename, create or unlink touched, the inode a
/// truncate or a change of times touched.
#[test]
fn fuse_a_change_on_the_mount_drops_only_the_client_answers_it_touches() {
    let t = "fuse_a_change_on_the_mount_drops_only_the_client_answers_it_touches";
    if !fuse_ready(t) {
        return;
    }
    let m = Mount::new("");
    m.sh("mkdir a b && echo x > a/x && echo yy > b/y && echo w > b/w");
    let c = m.client();
    let ask = |p: &str| -> (Option<u64>, u64) {
        let before = c.requests();
        let s = c.stat(p).ok().map(|s| s.size);
        (s, c.requests() - before)
    };
    for p in ["/a/x", "/b/y", "/b/w", "/b/missing"] {
        ask(p);
    }
    assert_eq!(ask("/b/missing"), (None, 0), "cached: names nothing");
    assert_eq!(ask("/b/w"), (Some(2), 0), "cached");
    // Through the mount: a rename in a, a create in a, a truncate of b/y.
    m.sh("mv a/x a/z && touch a/new && truncate -s 1 b/y");
    assert_eq!(ask("/a/x"), (None, 1), "the renamed name is asked again");
    assert_eq!(ask("/a/z"), (Some(2), 1));
    assert_eq!(
        ask("/b/y"),
        (Some(1), 1),
        "the truncated file is asked again"
    );
    assert_eq!(ask("/b/missing"), (None, 0), "untouched: still cached");
    assert_eq!(ask("/b/w"), (Some(2), 0), "untouched: still cached");
    // An unlink through the mount names its name.
    m.sh("rm b/w");
    assert_eq!(ask("/b/w"), (None, 1));
    assert_eq!(ask("/b/missing"), (None, 0));
}

/// Directory listings on the mount read a page at a time with cookie
/// offsets (docs/preload.md, "Directory streams"): the shim's test program
/// (crates/udax-preload/tests/dirstream.c), run on the mount, lists 20000
/// names each exactly once, meets names created after opendir further on
/// (no copy of the directory taken at opendir), and lists 5000 kept names
/// exactly once while a thread creates and removes others.
#[test]
fn fuse_a_big_directory_lists_in_pages_and_a_listing_under_changes_returns_kept_names_once() {
    let t =
        "fuse_a_big_directory_lists_in_pages_and_a_listing_under_changes_returns_kept_names_once";
    if !fuse_ready(t) || !have(t, "cc") {
        return;
    }
    let m = Mount::new("");
    let exe = m._dir.path().join("dirstream");
    let src = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../udax-preload/tests/dirstream.c"
    );
    let mut c = Command::new("cc");
    c.args(["-O1", "-Wall", "-pthread", "-o"])
        .arg(&exe)
        .arg(src);
    let o = run_within(c, DEADLINE);
    assert!(o.status.success(), "cc: {}", text(&o.stderr));
    let run = |mode: &str, dir: &str, n: &str| {
        let mut c = Command::new(&exe);
        c.args([mode, m.path(dir).to_str().unwrap(), n]);
        let o = run_within(c, DEADLINE);
        assert!(o.status.success(), "dirstream {mode}: {}", text(&o.stderr));
        text(&o.stdout)
    };
    let big = run("big", "big", "20000");
    for want in [
        "big_readdir_bad=0",
        "big_added_seen=1",
        "big_getdents_bad=0",
    ] {
        assert!(big.lines().any(|l| l == want), "want {want} in:\n{big}");
    }
    let churn = run("churn", "churn", "5000");
    for want in ["churn_readdir_bad=0", "churn_getdents_bad=0"] {
        assert!(churn.lines().any(|l| l == want), "want {want} in:\n{churn}");
    }
}
