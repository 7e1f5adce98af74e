//! An owner of a device file serving on a thread of the test, and the
//! options its clients connect with (tests/owner.rs, tests/poison.rs).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use udax::client::ConnectOptions;
use udax::device::{self, Device, OpenOptions as DevOpen};
use udax::fs::{Fs, MkfsOptions};
use udax::owner::{Owner, ServeOptions, Stopper};

/// A formatted device file on /dev/shm (a tmpfs device, mappable) and a
/// runtime directory for the socket; both removed on drop.
pub struct Setup {
    pub _dir: tempfile::TempDir,
    pub dev: PathBuf,
    pub run: PathBuf,
}

pub fn setup(mib: u64) -> Setup {
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
pub struct Serving {
    pub stop: Stopper,
    pub socket: PathBuf,
    pub thread: Option<std::thread::JoinHandle<udax::Result<()>>>,
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

/// `op` until it is not refused with the device busy (5 s at most). A
/// test that spawns a child process (`spawn_child`) while another test of
/// the same binary holds a device open lends the child that open file
/// description, and so its flock, from the fork to the exec.
pub fn unless_busy<T>(mut op: impl FnMut() -> udax::Result<T>) -> udax::Result<T> {
    let t = std::time::Instant::now();
    loop {
        match op() {
            Err(e) if e.errno() == libc::EBUSY && t.elapsed() < Duration::from_secs(5) => {
                std::thread::sleep(Duration::from_millis(5))
            }
            r => return r,
        }
    }
}

/// Open the device at `path` (see [`unless_busy`]).
pub fn open_dev(path: &std::path::Path) -> Arc<dyn Device> {
    unless_busy(|| Ok(device::open(path.to_str().unwrap(), &DevOpen::default())?)).unwrap()
}

pub fn serve(s: &Setup, idle: Option<Duration>) -> Serving {
    let o = unless_busy(|| {
        Owner::new(
            &s.dev,
            &ServeOptions {
                idle,
                runtime_dir: Some(s.run.clone()),
                ..Default::default()
            },
        )
    })
    .expect("owner");
    let (stop, socket) = (o.stopper(), o.socket().to_path_buf());
    Serving {
        stop,
        socket,
        thread: Some(std::thread::spawn(move || o.run())),
    }
}

pub fn opts(s: &Setup, write: bool) -> ConnectOptions {
    ConnectOptions {
        write,
        runtime_dir: Some(s.run.clone()),
        ..Default::default()
    }
}

/// Run test `name` of this test binary (an ignored one) as a child
/// process: a client of `s`'s owner (see [`child_client`]), with `env`
/// added, its stderr piped (the harness keeps a test's stdout), and its
/// stdin (a parent may tell it when to go on).
pub fn spawn_child(s: &Setup, name: &str, env: &[(&str, &str)]) -> std::process::Child {
    let mut c = std::process::Command::new(std::env::current_exe().unwrap());
    c.args([
        "--exact",
        name,
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env("UDAX_TEST_DEV", &s.dev)
    .env("UDAX_TEST_RUN", &s.run)
    .stdin(std::process::Stdio::piped())
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::piped());
    for (k, v) in env {
        c.env(k, v);
    }
    c.spawn().unwrap()
}

/// In a child process of [`spawn_child`]: a writing client of the test's
/// owner.
pub fn child_client() -> udax::client::Client {
    let dev = std::env::var("UDAX_TEST_DEV").expect("UDAX_TEST_DEV");
    let run = std::env::var("UDAX_TEST_RUN").expect("UDAX_TEST_RUN");
    udax::client::Client::connect(
        std::path::Path::new(&dev),
        &ConnectOptions {
            write: true,
            runtime_dir: Some(PathBuf::from(run)),
            ..Default::default()
        },
    )
    .unwrap()
}
