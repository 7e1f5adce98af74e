//! Shared set-up for the shim tests: a udax device file in /dev/shm, the built
//! `libudax_preload.so`, and running real programs with LD_PRELOAD.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use udax::fs::{Fs, OpenOptions};

/// The shim, built fresh: `cargo test` builds a package's cdylib only when it
/// is missing, never when its sources changed, so the tests build it
/// themselves (once per test binary; a no-op when it is up to date) into the
/// profile directory of this test binary (target/<profile>/).
pub fn shim() -> PathBuf {
    static SO: OnceLock<PathBuf> = OnceLock::new();
    SO.get_or_init(|| {
        let exe = std::env::current_exe().expect("test binary path");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target/<profile>");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut c = Command::new(cargo);
        // The shim starts the owner from the `udax` binary beside it.
        c.args(["build", "-p", "udax-preload", "-p", "udax-cli"]);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            c.arg("--release");
        }
        if let Some(target) = profile_dir.parent() {
            c.env("CARGO_TARGET_DIR", target);
        }
        let st = spawn(&mut c)
            .wait()
            .expect("run cargo build -p udax-preload");
        assert!(st.success(), "cargo build -p udax-preload failed");
        let so = profile_dir.join("libudax_preload.so");
        assert!(so.exists(), "{} not found after building", so.display());
        so
    })
    .clone()
}

/// Is `prog` installed? If not: skip (false), or fail when CI demands every
/// program (`UDAX_REQUIRE_PROGRAMS=1`, set by .ci/run).
pub fn have(prog: &str) -> bool {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(prog).is_file()))
        .unwrap_or(false);
    if !found {
        if std::env::var("UDAX_REQUIRE_PROGRAMS").as_deref() == Ok("1") {
            panic!("{prog} is not installed and UDAX_REQUIRE_PROGRAMS=1");
        }
        eprintln!(
            "SKIP: {prog} is not installed (set UDAX_REQUIRE_PROGRAMS=1 to make this a failure)"
        );
    }
    found
}

static N: AtomicUsize = AtomicUsize::new(0);

/// Held while this test process has a device open, and while it spawns a
/// child. A child forked while another test thread has a device open keeps a
/// copy of that descriptor, and so the device's flock, until it execs; the next
/// opener of that device would get "device busy". `Command::spawn` returns only
/// after the child's exec, so holding this across spawn closes the window.
static FORK_LOCK: Mutex<()> = Mutex::new(());

fn fork_lock() -> MutexGuard<'static, ()> {
    FORK_LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// Spawn `c`, a program that prints `ready` once it holds what it should
/// and then waits for its standard input to end; returns it once it is
/// ready (closing its stdin lets it go on).
pub fn spawn_ready(c: &mut Command) -> Child {
    use std::io::{BufRead, BufReader};
    let mut child = spawn(c.stdin(Stdio::piped()).stdout(Stdio::piped()));
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "ready\n");
    child
}

/// `Command::spawn` under [`FORK_LOCK`].
pub fn spawn(c: &mut Command) -> Child {
    let _g = fork_lock();
    c.spawn().expect("spawn")
}

/// `Command::output` with the spawn under [`FORK_LOCK`].
/// Compile the test program `tests/NAME.c` into `dir` (`cc -O1 -Wall
/// -pthread`, then `libs`), failing the test with the compiler's messages.
pub fn cc(dir: &Path, name: &str, libs: &[&str]) -> PathBuf {
    let exe = dir.join(name);
    let out = output(
        Command::new("cc")
            .args(["-O1", "-Wall", "-pthread", "-o"])
            .arg(&exe)
            .arg(format!("{}/tests/{name}.c", env!("CARGO_MANIFEST_DIR")))
            .args(libs),
    );
    assert!(
        out.status.success(),
        "cc {name}.c: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    exe
}

pub fn output(c: &mut Command) -> Output {
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    spawn(c).wait_with_output().expect("wait")
}

/// A fresh udax device and a mount prefix that does not exist on the host.
pub struct Env {
    _dir: tempfile::TempDir,
    pub dev: PathBuf,
    pub mount: String,
    pub host: PathBuf,
    so: PathBuf,
    /// A device file outside the temporary directory, removed on drop.
    extra: Option<PathBuf>,
}

impl Drop for Env {
    fn drop(&mut self) {
        self.stop_owner();
        if let Some(p) = &self.extra {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl Env {
    pub fn new(size: u64) -> Env {
        Env::make(None, size).expect("device in /dev/shm")
    }

    /// An Env whose device file lives in `dir` (e.g. a hugetlbfs mount).
    #[allow(dead_code)]
    pub fn on_dir(dir: &Path, size: u64) -> Result<Env, String> {
        Env::make(Some(dir), size)
    }

    fn make(dev_dir: Option<&Path>, size: u64) -> Result<Env, String> {
        let dir = tempfile::Builder::new()
            .prefix("udax-preload-")
            .tempdir_in("/dev/shm")
            .expect("tempdir in /dev/shm");
        let n = N.fetch_add(1, Ordering::Relaxed);
        let (dev, extra) = match dev_dir {
            None => (dir.path().join("dev.img"), None),
            Some(d) => {
                let p = d.join(format!("udax-preload-{}-{n}.img", std::process::id()));
                (p.clone(), Some(p))
            }
        };
        let g = fork_lock();
        let d = udax::device::open(
            dev.to_str().unwrap(),
            &udax::device::OpenOptions {
                create_size: Some(size),
            },
        )
        .map_err(|e| {
            if let Some(p) = &extra {
                let _ = std::fs::remove_file(p);
            }
            format!("create device file {}: {e}", dev.display())
        })?;
        Fs::mkfs(&*d, &Default::default()).expect("mkfs");
        drop(d);
        drop(g);
        let mount = format!("/udax-test-{}-{n}", std::process::id());
        assert!(!Path::new(&mount).exists());
        let host = dir.path().join("host");
        std::fs::create_dir(&host).unwrap();
        Ok(Env {
            _dir: dir,
            dev,
            mount,
            host,
            so: shim(),
            extra,
        })
    }

    /// The runtime directory of this Env's owner (its socket, log and
    /// start lock): one per Env.
    pub fn runtime(&self) -> PathBuf {
        self._dir.path().join("run")
    }

    /// Stop the owner the programs started (if one runs), so the device is
    /// free for this process.
    pub fn stop_owner(&self) {
        udax::client::stop_owner(
            &self.dev,
            Some(&self.runtime()),
            std::time::Duration::from_secs(20),
        )
        .expect("stop the owner");
    }

    /// Open the device for this process, after stopping its owner; retried
    /// while the stopping owner still holds the device lock.
    fn open_device(&self) -> std::sync::Arc<dyn udax::Device> {
        self.stop_owner();
        let t = std::time::Instant::now();
        loop {
            match udax::device::open(self.dev.to_str().unwrap(), &Default::default()) {
                Err(e) if e.errno() == libc::EBUSY && t.elapsed().as_secs() < 20 => {
                    std::thread::sleep(std::time::Duration::from_millis(10))
                }
                r => return r.expect("open device"),
            }
        }
    }

    /// `/mount/rel`.
    pub fn at(&self, rel: &str) -> String {
        format!("{}/{}", self.mount, rel.trim_start_matches('/'))
    }

    pub fn cmd(&self, prog: &str) -> Command {
        let mut c = Command::new(prog);
        c.env("LD_PRELOAD", &self.so)
            .env("UDAX_DEVICE", &self.dev)
            .env("UDAX_MOUNT", &self.mount)
            .env("UDAX_LOG", "warn")
            .env("UDAX_RUNTIME_DIR", self.runtime())
            .env("LC_ALL", "C")
            .current_dir(&self.host)
            .stdin(Stdio::null());
        c
    }

    /// Run `prog args` under the shim; panics with its output unless it exits 0.
    pub fn run(&self, prog: &str, args: &[&str]) -> Output {
        let out = output(self.cmd(prog).args(args));
        self.check(prog, args, &out);
        out
    }

    pub fn check(&self, prog: &str, args: &[&str], out: &Output) {
        assert!(
            out.status.success(),
            "{prog} {args:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !Path::new(&self.mount).exists(),
            "{prog} created {} on the host",
            self.mount
        );
    }

    /// Mount the device in this process (the program must have exited) and
    /// look at it with the library.
    pub fn with_fs<T>(&self, f: impl FnOnce(&Fs) -> T) -> T {
        let _g = fork_lock();
        let d = self.open_device();
        let fs = Fs::mount(d).expect("mount");
        let r = f(&fs);
        fs.unmount().expect("unmount");
        r
    }

    /// fsck of the device (no program may be using it).
    pub fn fsck(&self) -> udax::fs::FsckReport {
        let _g = fork_lock();
        let d = self.open_device();
        udax::fs::fsck(d.clone()).expect("fsck")
    }

    /// A udax file's bytes as `cat` under the shim reads them (through the
    /// owner, which may be serving other processes).
    pub fn read_udax_via_shim(&self, rel: &str) -> Vec<u8> {
        self.run("cat", &[&self.at(rel)]).stdout
    }

    pub fn read_udax(&self, path: &str) -> Vec<u8> {
        self.with_fs(|fs| read_all(fs, path))
    }

    pub fn write_udax(&self, path: &str, data: &[u8]) {
        self.with_fs(|fs| {
            let f = fs.open(path, &OpenOptions::create()).expect("create");
            f.set_len(0).unwrap();
            f.write_at(data, 0).expect("write");
            f.fsync().unwrap();
        })
    }
}

pub fn read_all(fs: &Fs, path: &str) -> Vec<u8> {
    let f = fs
        .open(path, &OpenOptions::read_only())
        .unwrap_or_else(|e| panic!("open {path} in udax: {e}"));
    let mut buf = vec![0u8; f.len() as usize];
    let n = f.read_at(&mut buf, 0).unwrap();
    assert_eq!(n, buf.len());
    buf
}

/// Deterministic pseudo-random bytes.
pub fn bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
