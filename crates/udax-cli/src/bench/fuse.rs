//! P17: the FUSE mount (`udax mount`, docs/fuse.md) against tmpfs, with the
//! LD_PRELOAD shim on the same device beside it, in one run.
//!
//! One device file (on tmpfs) is mounted through FUSE, served by its owner
//! (`udax serve`, started by the mount with a runtime directory of its
//! own). The same operations then run, in alternating order, on three
//! sides: a tmpfs directory (the baseline), a directory of the FUSE mount,
//! and another directory of the same device through the shim (a client of
//! the owner that serves the mount). The operations run in a child process,
//! `udax bench --fs-ops` (this binary re-executed, under `LD_PRELOAD` for the
//! shim), through libc calls, so the three sides run the same code:
//!
//! * 1 MiB sequential `pwrite` of a new 64 MiB file and `pread` of it (GB/s),
//! * 4 KiB random `pread` and `pwrite` (overwrites) of that file (k ops/s),
//! * create (`open(O_CREAT|O_EXCL)` + `close`), `stat` and `unlink` of empty
//!   files (k ops/s),
//!
//! and `dbench 1` (MB/s; skipped if dbench is not installed). Each FUSE row
//! has a `-shim` twin: the same operation through the shim against the same
//! tmpfs figures. FUSE has no target ratio: the rows are there to show
//! what a kernel round trip per request costs and what DAX buys.
//!
//! If FUSE cannot be used here (no /dev/fuse; not root and no fusermount3;
//! the mount fails) the group is skipped with a line on stderr.

use super::shim::{on_path, shim_so};
use super::{e, res, stat, Res};
use std::collections::HashMap;
use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use udax::fs::{Fs, MkfsOptions};

/// A child (one side's operations, or dbench) that runs longer is killed
/// and the bench fails: a FUSE server that stops answering must not hang it.
const DEADLINE: Duration = Duration::from_secs(180);

/// The size of the file of the data rows.
const FILE: u64 = 64 << 20;

/// Why FUSE cannot be used here, if it cannot.
fn fuse_missing() -> Option<String> {
    if !Path::new("/dev/fuse").exists() {
        return Some("/dev/fuse does not exist (no fuse module)".into());
    }
    if !rustix::process::geteuid().is_root() && !on_path("fusermount3") {
        return Some("not root and no fusermount3 (package fuse3)".into());
    }
    None
}

/// The device mounted at `at`; unmounted (detached) and its owner stopped
/// when dropped.
struct Mounted {
    dev: PathBuf,
    run: PathBuf,
    at: PathBuf,
}

impl Mounted {
    /// A fresh device of `size` bytes at `dir/p17.img`, mounted on
    /// `dir/mnt`, served by an owner whose socket is in `dir/run`.
    fn new(dir: &Path, size: u64) -> Result<Mounted, String> {
        let dev = dir.join("p17.img");
        let spec = dev.to_str().ok_or("non-UTF-8 tmpfs path")?;
        let d = e(udax::device::open(
            spec,
            &udax::device::OpenOptions {
                create_size: Some(size),
            },
        ))?;
        e(Fs::mkfs(&*d, &MkfsOptions::default()))?;
        drop(d);
        let (run, at) = (dir.join("run"), dir.join("mnt"));
        e(std::fs::create_dir(&at))?;
        let connect = udax::client::ConnectOptions {
            start: Some(e(std::env::current_exe())?),
            runtime_dir: Some(run.clone()),
            ..Default::default()
        };
        let opts = udax::client::mount::MountOptions::default();
        // Built before the mount so that a mount that half worked (the
        // owner started, the kernel mount refused) is cleaned up too.
        let m = Mounted { dev, run, at };
        e(udax::client::mount::mount(&m.dev, &m.at, &opts, &connect))?;
        Ok(m)
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = udax::client::mount::unmount(&self.at, true);
        let _ = udax::client::stop_owner(&self.dev, Some(&self.run), Duration::from_secs(10));
    }
}

/// Where a side runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Tmpfs,
    Fuse,
    Shim,
}

/// How a child reaches a side's directory.
struct Place<'a> {
    /// The directory of the data rows (each side its own).
    ops: String,
    /// The directory dbench works in.
    dbench: String,
    /// With the shim: `LD_PRELOAD` of this, the device, its mount path and
    /// the owner's runtime directory.
    shim: Option<(&'a Path, &'a Mounted, &'a str)>,
}

impl Place<'_> {
    fn command(&self, prog: &Path) -> Command {
        let mut c = Command::new(prog);
        c.env_remove("LD_PRELOAD")
            .env_remove("UDAX_MOUNT")
            .env_remove("UDAX_DEVICE")
            .env_remove("UDAX_MOUNT_OPTIONS");
        if let Some((so, m, mount)) = self.shim {
            c.env("LD_PRELOAD", so)
                .env("UDAX_DEVICE", &m.dev)
                .env("UDAX_MOUNT", mount)
                .env("UDAX_RUNTIME_DIR", &m.run);
        }
        c
    }
}

/// Run `c` to its end within [`DEADLINE`], its output through files in
/// `tmp` (a pipe held open by a grandchild could not keep us waiting):
/// its standard output.
fn run_child(mut c: Command, tmp: &Path, what: &str) -> Result<String, String> {
    let (o, er) = (tmp.join("child.out"), tmp.join("child.err"));
    let mut child = c
        .stdin(Stdio::null())
        .stdout(e(std::fs::File::create(&o))?)
        .stderr(e(std::fs::File::create(&er))?)
        .spawn()
        .map_err(|err| format!("{what}: {err}"))?;
    let t = Instant::now();
    let status = loop {
        if let Some(st) = e(child.try_wait())? {
            break st;
        }
        if t.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "{what}: did not finish within {DEADLINE:?} (killed)"
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let out = std::fs::read_to_string(&o).unwrap_or_default();
    if !status.success() {
        let err = std::fs::read_to_string(&er).unwrap_or_default();
        return Err(format!("{what} failed ({status}): {}", err.trim()));
    }
    Ok(out)
}

/// The sizes of a run.
struct Sizes {
    reps: usize,
    /// Passes over the file of the sequential rows.
    passes: u64,
    rand_ops: u64,
    files: u64,
    dbench_secs: &'static str,
    dbench_reps: usize,
}

/// The data rows: the key the child prints, the ids and texts of the FUSE
/// row and its shim twin, and the unit.
const ROWS: [(&str, &str, &str, &str, &str, &str); 7] = [
    (
        "seq-write",
        "P17-seq-write",
        "1 MiB sequential pwrite of a new 64 MiB file: FUSE mount vs tmpfs",
        "P17-seq-write-shim",
        "1 MiB sequential pwrite of a new 64 MiB file: the shim on the same device vs tmpfs",
        "GB/s",
    ),
    (
        "seq-read",
        "P17-seq-read",
        "1 MiB sequential pread of a 64 MiB file: FUSE mount vs tmpfs",
        "P17-seq-read-shim",
        "1 MiB sequential pread of a 64 MiB file: the shim on the same device vs tmpfs",
        "GB/s",
    ),
    (
        "rand-read",
        "P17-rand-read",
        "4 KiB random pread of a 64 MiB file: FUSE mount vs tmpfs",
        "P17-rand-read-shim",
        "4 KiB random pread of a 64 MiB file: the shim on the same device vs tmpfs",
        "k ops/s",
    ),
    (
        "rand-write",
        "P17-rand-write",
        "4 KiB random pwrite (overwrite) of a 64 MiB file: FUSE mount vs tmpfs",
        "P17-rand-write-shim",
        "4 KiB random pwrite (overwrite) of a 64 MiB file: the shim on the same device vs tmpfs",
        "k ops/s",
    ),
    (
        "create",
        "P17-create",
        "create (open O_CREAT|O_EXCL + close) of an empty file: FUSE mount vs tmpfs",
        "P17-create-shim",
        "create (open O_CREAT|O_EXCL + close) of an empty file: the shim on the same device \
         vs tmpfs",
        "k ops/s",
    ),
    (
        "stat",
        "P17-stat",
        "stat of an empty file: FUSE mount vs tmpfs",
        "P17-stat-shim",
        "stat of an empty file: the shim on the same device vs tmpfs",
        "k ops/s",
    ),
    (
        "unlink",
        "P17-unlink",
        "unlink of an empty file: FUSE mount vs tmpfs",
        "P17-unlink-shim",
        "unlink of an empty file: the shim on the same device vs tmpfs",
        "k ops/s",
    ),
];

/// The order of the three sides in pair `i`: rotated, so that neither the
/// machine's drift nor the aftermath of the previous side falls on one
/// side only.
fn order(i: usize, sides: &[Side]) -> Vec<Side> {
    let mut v = sides.to_vec();
    let n = v.len();
    v.rotate_left(i % n);
    v
}

pub(super) fn run(quick: bool, reps: usize, tmpfs: &Path) -> Result<Vec<Res>, String> {
    let mut out = Vec::new();
    if let Some(why) = fuse_missing() {
        eprintln!("P17: skipped, FUSE cannot be used here: {why}");
        return Ok(out);
    }
    let z = if quick {
        Sizes {
            reps: reps.min(3),
            passes: 1,
            rand_ops: 5_000,
            files: 300,
            dbench_secs: "2",
            dbench_reps: 1,
        }
    } else {
        Sizes {
            reps: reps.min(5),
            passes: 4,
            rand_ops: 20_000,
            files: 2_000,
            dbench_secs: "2",
            dbench_reps: 3,
        }
    };
    let tmp = tempfile::tempdir_in(tmpfs).map_err(|err| format!("{}: {err}", tmpfs.display()))?;
    // Declared after `tmp`, so dropped (unmounted) before it is removed.
    let m = match Mounted::new(tmp.path(), 512 << 20) {
        Ok(m) => m,
        Err(err) => {
            eprintln!("P17: skipped, the FUSE mount failed: {err}");
            return Ok(out);
        }
    };
    let so = shim_so();
    if so.is_none() {
        eprintln!(
            "P17: the -shim rows skipped, libudax_preload.so not found next to udax \
             (cargo build --release -p udax-preload, or set UDAX_PRELOAD_SO)"
        );
    }
    let mount = format!("/udax-bench-{}", std::process::id());
    let host = tmp.path().join("host");
    let place = |s: Side| -> Place {
        match s {
            Side::Tmpfs => Place {
                ops: host.join("ops").display().to_string(),
                dbench: host.join("dbench").display().to_string(),
                shim: None,
            },
            Side::Fuse => Place {
                ops: m.at.join("fuse").display().to_string(),
                dbench: m.at.join("dbench-fuse").display().to_string(),
                shim: None,
            },
            Side::Shim => Place {
                ops: format!("{mount}/shim"),
                dbench: format!("{mount}/dbench-shim"),
                shim: Some((so.as_deref().unwrap_or(Path::new("")), &m, &mount)),
            },
        }
    };
    // The shim's directories, made through the mount (the same device).
    for d in [
        host.clone(),
        host.join("ops"),
        host.join("dbench"),
        m.at.join("fuse"),
        m.at.join("shim"),
    ] {
        e(std::fs::create_dir(&d))?;
    }
    let sides: &[Side] = if so.is_some() {
        &[Side::Tmpfs, Side::Fuse, Side::Shim]
    } else {
        &[Side::Tmpfs, Side::Fuse]
    };
    let exe = e(std::env::current_exe())?;

    // ---- the data and metadata rows: one child per side and pair ----
    let mut got: HashMap<(usize, &str), Vec<f64>> = HashMap::new();
    for i in 0..z.reps {
        for s in order(i, sides) {
            let p = place(s);
            let mut c = p.command(&exe);
            c.args(["bench", "--fs-ops", &p.ops])
                .arg(FILE.to_string())
                .arg(z.passes.to_string())
                .arg(z.rand_ops.to_string())
                .arg(z.files.to_string());
            let text = run_child(c, tmp.path(), &format!("P17 operations in {}", p.ops))?;
            for l in text.lines() {
                let mut w = l.split_whitespace();
                if let (Some(k), Some(v)) = (w.next(), w.next()) {
                    if let Some(&(key, ..)) = ROWS.iter().find(|r| r.0 == k) {
                        let v = v
                            .parse::<f64>()
                            .map_err(|_| format!("P17 operations: bad line {l:?}"))?;
                        got.entry((s as usize, key)).or_default().push(v);
                    }
                }
            }
        }
    }
    let series = |s: Side, key: &str| -> Result<super::Stat, String> {
        match got.get(&(s as usize, key)) {
            Some(v) if !v.is_empty() => Ok(stat(v.clone())),
            _ => Err(format!("P17 operations printed no {key}")),
        }
    };
    for (key, fid, fname, sid, sname, unit) in ROWS {
        let b = series(Side::Tmpfs, key)?;
        out.push(res(
            fid,
            fname,
            unit,
            series(Side::Fuse, key)?,
            Some(b),
            None,
        ));
        if so.is_some() {
            out.push(res(
                sid,
                sname,
                unit,
                series(Side::Shim, key)?,
                Some(b),
                None,
            ));
        }
    }

    // ---- dbench 1 ----
    if !on_path("dbench") {
        eprintln!("P17-dbench1: skipped, dbench not installed");
        return Ok(out);
    }
    let mut tp: HashMap<usize, Vec<f64>> = HashMap::new();
    for i in 0..z.dbench_reps {
        // Each run in an empty directory (made through the mount for the
        // FUSE and shim sides: one device).
        for d in [
            host.join("dbench"),
            m.at.join("dbench-fuse"),
            m.at.join("dbench-shim"),
        ] {
            let _ = std::fs::remove_dir_all(&d);
            e(std::fs::create_dir(&d))?;
        }
        for s in order(i, sides) {
            let p = place(s);
            let mut c = p.command(Path::new("dbench"));
            c.args(["-D", &p.dbench, "-t", z.dbench_secs, "1"]);
            let text = run_child(c, tmp.path(), &format!("dbench 1 in {}", p.dbench))?;
            let v = text
                .lines()
                .find_map(|l| l.trim().strip_prefix("Throughput "))
                .and_then(|l| l.split_whitespace().next())
                .and_then(|v| v.parse::<f64>().ok())
                .ok_or_else(|| format!("dbench in {}: no throughput line", p.dbench))?;
            tp.entry(s as usize).or_default().push(v);
        }
    }
    let db = |s: Side| stat(tp.get(&(s as usize)).cloned().unwrap_or_default());
    let b = db(Side::Tmpfs);
    out.push(res(
        "P17-dbench1",
        "dbench 1 (whole process): FUSE mount vs tmpfs",
        "MB/s",
        db(Side::Fuse),
        Some(b),
        None,
    ));
    if so.is_some() {
        out.push(res(
            "P17-dbench1-shim",
            "dbench 1 (whole process): the shim on the same device vs tmpfs",
            "MB/s",
            db(Side::Shim),
            Some(b),
            None,
        ));
    }
    Ok(out)
}

/// An open file descriptor, closed when dropped.
struct Fd(i32);

impl Drop for Fd {
    fn drop(&mut self) {
        // SAFETY: closing the descriptor this owns.
        unsafe { libc::close(self.0) };
    }
}

fn cpath(p: &str) -> Result<CString, String> {
    CString::new(p).map_err(|_| format!("{p:?}: path with NUL"))
}

fn open(p: &CString, flags: i32) -> Result<Fd, String> {
    // SAFETY: a C string path; a mode argument for O_CREAT.
    let fd = unsafe { libc::open(p.as_ptr(), flags | libc::O_CLOEXEC, 0o644) };
    if fd < 0 {
        return Err(format!("open {p:?}: {}", std::io::Error::last_os_error()));
    }
    Ok(Fd(fd))
}

/// `pread` of all of `b` at `off`.
fn pread_all(fd: &Fd, b: &mut [u8], off: u64) -> Result<(), String> {
    let mut done = 0;
    while done < b.len() {
        // SAFETY: the rest of a buffer owned by the caller.
        let n = unsafe {
            libc::pread(
                fd.0,
                b[done..].as_mut_ptr().cast(),
                b.len() - done,
                (off + done as u64) as i64,
            )
        };
        if n <= 0 {
            return Err(format!(
                "pread at {}: {}",
                off + done as u64,
                if n == 0 {
                    "end of file".to_string()
                } else {
                    std::io::Error::last_os_error().to_string()
                }
            ));
        }
        done += n as usize;
    }
    Ok(())
}

/// `pwrite` of all of `b` at `off`.
fn pwrite_all(fd: &Fd, b: &[u8], off: u64) -> Result<(), String> {
    let mut done = 0;
    while done < b.len() {
        // SAFETY: the rest of a buffer owned by the caller.
        let n = unsafe {
            libc::pwrite(
                fd.0,
                b[done..].as_ptr().cast(),
                b.len() - done,
                (off + done as u64) as i64,
            )
        };
        if n <= 0 {
            return Err(format!(
                "pwrite at {}: {}",
                off + done as u64,
                std::io::Error::last_os_error()
            ));
        }
        done += n as usize;
    }
    Ok(())
}

/// The `--fs-ops DIR SIZE PASSES RAND FILES` child: the P17 operations in
/// DIR through libc calls (so that `LD_PRELOAD` interposes them), one
/// `name value` line each on stdout. A file of SIZE bytes is written
/// PASSES times (truncated first, untimed) in 1 MiB `pwrite`s and read
/// PASSES times in 1 MiB `pread`s (GB/s); RAND 4 KiB `pread`s, then RAND
/// 4 KiB `pwrite`s, at random block offsets of it (k ops/s); then FILES
/// empty files are created, each stat'ed, each unlinked (k ops/s).
pub(super) fn fs_ops(args: &[String]) -> Result<(), String> {
    let [dir, size, passes, rand, files] = args else {
        return Err("--fs-ops DIR SIZE PASSES RAND FILES".into());
    };
    let num = |s: &str| {
        s.parse::<u64>()
            .map_err(|_| format!("--fs-ops: {s:?} is not a number"))
    };
    let (size, passes, rand, files) = (num(size)?, num(passes)?.max(1), num(rand)?, num(files)?);
    const CHUNK: usize = 1 << 20;
    if size == 0 || size % CHUNK as u64 != 0 {
        return Err("--fs-ops: SIZE must be a positive multiple of 1 MiB".into());
    }
    let data = cpath(&format!("{dir}/p17.dat"))?;
    // Both buffers start on a page.
    let mut backing = vec![0x5au8; CHUNK + 4096];
    let skew = backing.as_ptr().align_offset(4096);
    let buf = &mut backing[skew..skew + CHUNK];
    let chunks = size / CHUNK as u64;
    let rate = |bytes: u64, secs: f64| bytes as f64 / secs / 1e9;
    let kops = |n: u64, t: Instant| n as f64 / t.elapsed().as_secs_f64() / 1e3;

    // Sequential write of a new file, PASSES times.
    let mut secs = 0.0;
    for _ in 0..passes {
        let fd = open(&data, libc::O_CREAT | libc::O_TRUNC | libc::O_RDWR)?;
        let t = Instant::now();
        for k in 0..chunks {
            pwrite_all(&fd, buf, k * CHUNK as u64)?;
        }
        secs += t.elapsed().as_secs_f64();
    }
    println!("seq-write {:.4}", rate(size * passes, secs));
    let fd = open(&data, libc::O_RDWR)?;
    let t = Instant::now();
    for _ in 0..passes {
        for k in 0..chunks {
            pread_all(&fd, buf, k * CHUNK as u64)?;
        }
    }
    println!(
        "seq-read {:.4}",
        rate(size * passes, t.elapsed().as_secs_f64())
    );
    if buf.iter().any(|&b| b != 0x5a) {
        return Err("seq-read: the data read back differs".into());
    }

    // 4 KiB random reads, then overwrites, at the same offsets.
    let mut rng = fastrand::Rng::with_seed(17);
    let offs: Vec<u64> = (0..rand).map(|_| rng.u64(0..size / 4096) * 4096).collect();
    let page = &mut buf[..4096];
    let t = Instant::now();
    for &o in &offs {
        pread_all(&fd, page, o)?;
    }
    println!("rand-read {:.3}", kops(rand, t));
    let t = Instant::now();
    for &o in &offs {
        pwrite_all(&fd, page, o)?;
    }
    println!("rand-write {:.3}", kops(rand, t));
    drop(fd);
    // SAFETY: a C string path.
    if unsafe { libc::unlink(data.as_ptr()) } != 0 {
        return Err(format!(
            "unlink {data:?}: {}",
            std::io::Error::last_os_error()
        ));
    }

    // Metadata: create, stat, unlink of FILES empty files.
    let names = (0..files)
        .map(|i| cpath(&format!("{dir}/f{i:06}")))
        .collect::<Result<Vec<_>, _>>()?;
    let t = Instant::now();
    for n in &names {
        drop(open(n, libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY)?);
    }
    println!("create {:.3}", kops(files, t));
    // SAFETY: all-zero is a valid `stat` (plain integers).
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    let t = Instant::now();
    for n in &names {
        // SAFETY: a C string path and a `stat` owned here.
        if unsafe { libc::stat(n.as_ptr(), &mut st) } != 0 {
            return Err(format!("stat {n:?}: {}", std::io::Error::last_os_error()));
        }
    }
    println!("stat {:.3}", kops(files, t));
    if st.st_size != 0 {
        return Err(format!("stat: an empty file has size {}", st.st_size));
    }
    let t = Instant::now();
    for n in &names {
        // SAFETY: a C string path.
        if unsafe { libc::unlink(n.as_ptr()) } != 0 {
            return Err(format!("unlink {n:?}: {}", std::io::Error::last_os_error()));
        }
    }
    println!("unlink {:.3}", kops(files, t));
    Ok(())
}
