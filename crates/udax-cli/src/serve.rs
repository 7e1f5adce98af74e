//! `udax serve`, and where the metadata commands (ls, stat, mkdir, rm, mv,
//! df) send their calls: an embedded mount when the device is free, the
//! device's owner when one serves it (docs/multiprocess.md).

use crate::{ctx, mount_dev, mount_options, open_error, AnyResult};
use std::path::Path;
use std::time::Duration;
use udax::client::{Client, ConnectOptions, RemoteFile};
use udax::fs::{DirEntry, File, Fs, OpenOptions, Stat, StatFs};
use udax::owner::{self, Owner, ServeOptions};

/// `udax serve DEV`: in the foreground, serve until idle or a signal stops
/// it; else start a detached owner and return once its socket answers.
pub fn serve_cmd(dev: &str, foreground: bool, idle: u64) -> AnyResult<()> {
    let idle = (idle > 0).then(|| Duration::from_secs(idle));
    if foreground {
        let o = ctx(
            Owner::new(
                Path::new(dev),
                &ServeOptions {
                    idle,
                    runtime_dir: None,
                    ..Default::default()
                },
            ),
            dev,
        )?;
        stop_on_signals(o.stopper())?;
        eprintln!("udax: serving {dev} at {}", o.socket().display());
        return ctx(o.run(), dev);
    }
    let uuid = ctx(udax::client::uuid_of(Path::new(dev)), dev)?;
    let dir = owner::runtime_dir();
    ctx(owner::make_runtime_dir(&dir), &dir.display().to_string())?;
    let sock = owner::socket_path(&dir, &uuid);
    if Client::connect_socket(&sock, false).is_ok() {
        eprintln!("udax: {dev} is already served at {}", sock.display());
        return Ok(());
    }
    let log_path = dir.join(format!("{uuid}.log"));
    let log = ctx(
        std::fs::File::create(&log_path),
        &log_path.display().to_string(),
    )?;
    let exe = ctx(std::env::current_exe(), "udax executable")?;
    use std::os::unix::process::CommandExt;
    let mut child = ctx(
        std::process::Command::new(exe)
            .arg("serve")
            .arg("--foreground")
            .arg("--idle")
            .arg(idle.map_or(0, |d| d.as_secs()).to_string())
            .arg(dev)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log)
            // Its own process group: a Ctrl-C at the starter's terminal
            // does not reach the owner.
            .process_group(0)
            .spawn(),
        "starting the owner",
    )?;
    let t = std::time::Instant::now();
    loop {
        if Client::connect_socket(&sock, false).is_ok() {
            eprintln!(
                "udax: serving {dev} at {} (pid {}, log {})",
                sock.display(),
                child.id(),
                log_path.display()
            );
            return Ok(());
        }
        if let Ok(Some(st)) = child.try_wait() {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            return Err(format!("the owner exited ({st}): {}", text.trim()));
        }
        if t.elapsed() > Duration::from_secs(30) {
            return Err(format!(
                "the owner does not answer at {} (log: {})",
                sock.display(),
                log_path.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGINT and SIGTERM stop the owner cleanly (a checkpoint, the socket
/// removed): a thread waits for them (blocked in every thread, so no
/// handler runs) and asks the owner to stop.
fn stop_on_signals(stop: owner::Stopper) -> AnyResult<()> {
    let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigemptyset initialises the set; sigaddset adds valid signal
    // numbers to it; pthread_sigmask blocks them in this thread, and so in
    // every thread started after it (the owner's client threads).
    let set = unsafe {
        libc::sigemptyset(set.as_mut_ptr());
        libc::sigaddset(set.as_mut_ptr(), libc::SIGINT);
        libc::sigaddset(set.as_mut_ptr(), libc::SIGTERM);
        let set = set.assume_init();
        if libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            return Err("blocking SIGINT/SIGTERM failed".into());
        }
        set
    };
    std::thread::Builder::new()
        .name("udax-signals".into())
        .spawn(move || {
            let mut sig = 0;
            // SAFETY: `set` is an initialised signal set; sigwait writes
            // the signal number into `sig`.
            if unsafe { libc::sigwait(&set, &mut sig) } == 0 {
                eprintln!("udax: signal {sig}: checkpointing and exiting");
                stop.stop();
            }
        })
        .map(|_| ())
        .map_err(|e| format!("signal thread: {e}"))
}

/// Where a command's metadata calls go.
pub enum Meta {
    /// The device was free: mounted in this process.
    Local(Fs),
    /// An owner serves the device: every call is a round trip to it.
    Owner(Client),
}

impl Meta {
    /// Mount `spec` (read-only for a look), or, if the device is busy and an
    /// owner serves it, connect to the owner.
    pub fn open(spec: &str, look: bool) -> AnyResult<Meta> {
        match udax::device::open(spec, &udax::device::OpenOptions::default()) {
            // Held by an owner, or not ours to open read-write (an owner may
            // still admit a reader).
            Err(busy)
                if Path::new(spec).exists()
                    && matches!(busy.errno(), libc::EBUSY | libc::EACCES | libc::EPERM) =>
            {
                let opts = ConnectOptions {
                    write: !look,
                    ..Default::default()
                };
                match Client::connect(Path::new(spec), &opts) {
                    Ok(c) => Ok(Meta::Owner(c)),
                    Err(udax::Error::NotConnected(_)) => Err(open_error(spec, busy)),
                    Err(e) => Err(format!("{spec}: {e}")),
                }
            }
            Err(e) => Err(open_error(spec, e)),
            Ok(dev) => Ok(Meta::Local(mount_dev(dev, spec, &mount_options(look))?)),
        }
    }

    pub fn stat(&self, p: &str) -> udax::Result<Stat> {
        match self {
            Meta::Local(fs) => fs.stat(p),
            Meta::Owner(c) => c.stat(p),
        }
    }

    /// `lstat`: a symbolic link itself.
    pub fn lstat(&self, p: &str) -> udax::Result<Stat> {
        match self {
            Meta::Local(fs) => fs.lstat(p),
            Meta::Owner(c) => c.lstat(p),
        }
    }

    pub fn readlink(&self, p: &str) -> udax::Result<Vec<u8>> {
        match self {
            Meta::Local(fs) => fs.readlink(p),
            Meta::Owner(c) => c.readlink(p),
        }
    }

    pub fn symlink(&self, target: &[u8], p: &str) -> udax::Result<()> {
        match self {
            Meta::Local(fs) => fs.symlink(target, p),
            Meta::Owner(c) => c.symlink(target, p),
        }
    }

    pub fn link(&self, existing: &str, new: &str) -> udax::Result<()> {
        match self {
            Meta::Local(fs) => fs.link(existing, new),
            Meta::Owner(c) => c.link(existing, new),
        }
    }

    pub fn read_dir(&self, p: &str) -> udax::Result<Vec<DirEntry>> {
        match self {
            Meta::Local(fs) => fs.read_dir(p),
            Meta::Owner(c) => c.read_dir(p),
        }
    }

    pub fn mkdir(&self, p: &str, mode: u32) -> udax::Result<()> {
        match self {
            Meta::Local(fs) => fs.mkdir(p, mode),
            Meta::Owner(c) => c.mkdir(p, mode),
        }
    }

    pub fn unlink(&self, p: &str) -> udax::Result<()> {
        match self {
            Meta::Local(fs) => fs.unlink(p),
            Meta::Owner(c) => c.unlink(p),
        }
    }

    pub fn rmdir(&self, p: &str) -> udax::Result<()> {
        match self {
            Meta::Local(fs) => fs.rmdir(p),
            Meta::Owner(c) => c.rmdir(p),
        }
    }

    pub fn rename(&self, a: &str, b: &str) -> udax::Result<()> {
        match self {
            Meta::Local(fs) => fs.rename(a, b),
            Meta::Owner(c) => c.rename(a, b),
        }
    }

    pub fn statfs(&self) -> udax::Result<StatFs> {
        match self {
            Meta::Local(fs) => Ok(fs.statfs()),
            Meta::Owner(c) => c.statfs(),
        }
    }

    /// Open the file at `p`: for reading, or (`create_trunc`) created or
    /// truncated for writing. Through an owner, reads go straight to the
    /// device under a lease and writes through the owner (or in place).
    pub fn open_file(&self, p: &str, create_trunc: bool) -> udax::Result<MetaFile> {
        match self {
            Meta::Local(fs) => {
                let opts = if create_trunc {
                    OpenOptions {
                        truncate: true,
                        ..OpenOptions::create()
                    }
                } else {
                    OpenOptions::read_only()
                };
                fs.open(p, &opts).map(MetaFile::Local)
            }
            Meta::Owner(c) => {
                let f = c.open(p, create_trunc, create_trunc, 0o644)?;
                if create_trunc {
                    f.set_len(0)?;
                }
                Ok(MetaFile::Owner(f))
            }
        }
    }

    /// Unmount an embedded mount (a checkpoint); an owner needs nothing.
    pub fn finish(self, spec: &str) -> AnyResult<()> {
        match self {
            Meta::Local(fs) => ctx(fs.unmount(), spec),
            Meta::Owner(_) => Ok(()),
        }
    }
}

/// A file opened by [`Meta::open_file`].
pub enum MetaFile {
    Local(File),
    Owner(RemoteFile),
}

impl MetaFile {
    pub fn len(&self) -> udax::Result<u64> {
        match self {
            MetaFile::Local(f) => Ok(f.len()),
            MetaFile::Owner(f) => f.len(),
        }
    }

    pub fn read_at(&self, buf: &mut [u8], off: u64) -> udax::Result<usize> {
        match self {
            MetaFile::Local(f) => f.read_at(buf, off),
            MetaFile::Owner(f) => f.read_at(buf, off),
        }
    }

    pub fn write_at(&self, data: &[u8], off: u64) -> udax::Result<usize> {
        match self {
            MetaFile::Local(f) => f.write_at(data, off),
            MetaFile::Owner(f) => f.write_at(data, off),
        }
    }

    pub fn fsync(&self) -> udax::Result<()> {
        match self {
            MetaFile::Local(f) => f.fsync(),
            MetaFile::Owner(f) => f.fsync(),
        }
    }
}
