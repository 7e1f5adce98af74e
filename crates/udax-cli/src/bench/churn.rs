//! P14: mmap churn, as fsx does (and git's pack windows, LMDB growth): map
//! 64 KiB of an allocated file shared, touch it, unmap it, over and over, at
//! random 64 KiB-aligned offsets of a 16 MiB file. Each row is the time of
//! one map + touch + unmap, in us (lower is better), against the same loop
//! on a tmpfs file mapped through the kernel, measured in the same run.
//!
//! * P14-emb-load: the embedded library (`Fs` on a memfd device), one load
//!   from the mapping; P14-emb: 16 stores instead (one per page).
//! * P14-shim-load, P14-shim: the same loop in a small program (`udax bench
//!   --map-loop`, plain libc `mmap`/`munmap`) run through the LD_PRELOAD shim
//!   on a udax path (a client of the device's owner, the shim's default) vs
//!   the same program on a tmpfs path.

use super::mmap::touch;
use super::shim::{paired, shim_so, Shim, Side};
use super::{e, memfd_fs, res, Cfg, Res};
use std::path::Path;
use std::process::Command;
use std::time::Instant;
use udax::{MapFlags, Prot};

/// Bytes mapped per iteration.
const WIN: usize = 64 << 10;
/// Size of the file the windows are taken from.
const SPAN: u64 = 16 << 20;
/// Untimed iterations before the timed ones (the first mapping of a process
/// starts udax's fault engine; the kernel has nothing alike to start).
const WARM: usize = 100;

/// `n` random window offsets (64 KiB aligned) inside the file.
fn windows(n: usize, seed: u64) -> Vec<u64> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let k = SPAN / WIN as u64;
    (0..n).map(|_| rng.u64(0..k) * WIN as u64).collect()
}

/// What is done through each mapping: one load, or a store to every page.
fn use_window(p: *mut u8, stores: bool) {
    if stores {
        touch(p, WIN);
    } else {
        // SAFETY: `p` is a live readable mapping of `WIN` bytes (callers).
        unsafe { std::hint::black_box(p.read_volatile()) };
    }
}

/// Microseconds per iteration of `one` over `offs` (after `WARM` untimed).
fn per_iter(offs: &[u64], mut one: impl FnMut(u64) -> Result<(), String>) -> Result<f64, String> {
    for &o in offs.iter().cycle().take(WARM) {
        one(o)?;
    }
    let t = Instant::now();
    for &o in offs {
        one(o)?;
    }
    Ok(t.elapsed().as_secs_f64() * 1e6 / offs.len() as f64)
}

/// The kernel's side: map `[o, o+WIN)` of `f` shared, use it, unmap it.
fn host_window(f: &std::fs::File, o: u64, stores: bool) -> Result<(), String> {
    // SAFETY: a fresh shared mapping of our own file at a kernel-chosen
    // address, unmapped below.
    let p = e(unsafe {
        rustix::mm::mmap(
            std::ptr::null_mut(),
            WIN,
            rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
            rustix::mm::MapFlags::SHARED,
            f,
            o,
        )
    })?;
    use_window(p.cast(), stores);
    // SAFETY: the mapping made above; nothing refers to it after this.
    e(unsafe { rustix::mm::munmap(p, WIN) })
}

/// The rows P14-emb-load, P14-emb, P14-shim-load and P14-shim; the baseline
/// files go in `tmpfs`.
pub(super) fn run(c: &Cfg, quick: bool, tmpfs: &Path) -> Result<Vec<Res>, String> {
    let mut out = Vec::new();
    let n = if quick { 2_000 } else { 20_000 };
    let offs = windows(n, 14);
    let data = vec![0x5Au8; 1 << 20];

    // ---- embedded ----
    let fs = memfd_fs(SPAN + (64 << 20))?;
    let f = e(fs.create("/churn", 0o644))?;
    for i in 0..SPAN / data.len() as u64 {
        e(f.write_at(&data, i * data.len() as u64))?;
    }
    let tmp = tempfile::tempdir_in(tmpfs).map_err(|err| format!("{}: {err}", tmpfs.display()))?;
    let hp = tmp.path().join("churn");
    let hf = e(std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&hp))?;
    for i in 0..SPAN / data.len() as u64 {
        e(std::os::unix::fs::FileExt::write_all_at(
            &hf,
            &data,
            i * data.len() as u64,
        ))?;
    }
    for (id, name, stores) in [
        (
            "P14-emb-load",
            "64 KiB shared mmap of an allocated file + one load + munmap, embedded (Fs on a \
             memfd) vs the kernel's mmap of a tmpfs file (lower is better)",
            false,
        ),
        (
            "P14-emb",
            "64 KiB shared mmap of an allocated file + a store to each of its 16 pages + \
             munmap, embedded vs tmpfs through the kernel (lower is better)",
            true,
        ),
    ] {
        // Paired and alternating, as the shim rows: this VM's speed drifts
        // from second to second, and neither side should take all of one.
        let (u, b) = paired(
            c.reps,
            Side {
                prepare: || Ok(()),
                run: |()| {
                    per_iter(&offs, |o| {
                        let m = e(f.mmap(o, WIN, Prot::ReadWrite, MapFlags::SHARED))?;
                        use_window(m.as_ptr(), stores);
                        drop(m);
                        Ok(())
                    })
                },
            },
            Side {
                prepare: || Ok(()),
                run: |()| per_iter(&offs, |o| host_window(&hf, o, stores)),
            },
        )?;
        out.push(res(id, name, "us", u, Some(b), None));
    }
    drop(f);
    drop(hf);
    e(fs.unmount())?;

    // ---- through the shim ----
    let Some(so) = shim_so() else {
        eprintln!(
            "P14-shim: skipped, libudax_preload.so not found next to udax \
             (cargo build --release -p udax-preload, or set UDAX_PRELOAD_SO)"
        );
        return Ok(out);
    };
    let exe = e(std::env::current_exe())?;
    let mount = format!("/udax-bench-{}", std::process::id());
    let run = |path: &str, stores: bool, shim: Option<&Shim>| -> Result<f64, String> {
        let mut cmd = Command::new(&exe);
        cmd.args([
            "bench",
            "--map-loop",
            path,
            &n.to_string(),
            if stores { "16" } else { "1" },
        ]);
        if let Some(s) = shim {
            s.apply(&mut cmd);
        }
        let o = cmd.output().map_err(|err| format!("map loop: {err}"))?;
        String::from_utf8_lossy(&o.stdout)
            .trim()
            .parse::<f64>()
            .map_err(|_| format!("map loop: {}", String::from_utf8_lossy(&o.stderr).trim()))
    };
    for (id, name, stores) in [
        (
            "P14-shim-load",
            "a program's 64 KiB shared mmap + one load + munmap of an allocated file: a udax \
             file through the shim (a client of the device's owner) vs tmpfs (lower is better)",
            false,
        ),
        (
            "P14-shim",
            "a program's 64 KiB shared mmap + 16 stores + munmap: through the shim vs tmpfs \
             (lower is better)",
            true,
        ),
    ] {
        let (u, b) = paired(
            c.reps,
            Side {
                prepare: || Shim::on(&so, tmp.path(), &mount, SPAN + (48 << 20), &[], false),
                run: |s| run(&format!("{mount}/p14"), stores, Some(&s)),
            },
            Side {
                prepare: || Ok(()),
                run: |()| run(hp.to_str().unwrap_or_default(), stores, None),
            },
        )?;
        out.push(res(id, name, "us", u, Some(b), None));
    }
    super::shim::stop_device_owner(tmp.path());
    Ok(out)
}

/// The `--map-loop PATH N STORES` child: fill PATH with 16 MiB through libc,
/// then N times map a random 64 KiB window of it shared (libc `mmap`, so
/// LD_PRELOAD interposes it), load one byte (STORES = 1) or store to each
/// page (STORES = 16), unmap; prints us per iteration.
pub(super) fn map_loop(args: &[String]) -> Result<(), String> {
    let [path, n, stores] = args else {
        return Err("--map-loop PATH N STORES".into());
    };
    let n: usize = n.parse().map_err(|_| "--map-loop: N must be a number")?;
    let stores = match stores.as_str() {
        "1" => false,
        "16" => true,
        _ => return Err("--map-loop: STORES is 1 or 16".into()),
    };
    let c = std::ffi::CString::new(path.as_str()).map_err(|_| "path with NUL")?;
    // SAFETY: a C string path; O_CREAT with a mode argument.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_CREAT | libc::O_RDWR, 0o644) };
    if fd < 0 {
        return Err(format!("{path}: {}", std::io::Error::last_os_error()));
    }
    let data = vec![0x5Au8; 1 << 20];
    for i in 0..SPAN / data.len() as u64 {
        let at = (i * data.len() as u64) as i64;
        // SAFETY: `data` is a live buffer of `data.len()` bytes.
        if unsafe { libc::pwrite(fd, data.as_ptr().cast(), data.len(), at) } != data.len() as isize
        {
            return Err(format!("{path}: {}", std::io::Error::last_os_error()));
        }
    }
    let one = |o: u64| -> Result<(), String> {
        // SAFETY: a fresh shared mapping of our own descriptor at an address
        // the system (or the shim) chooses, unmapped below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                WIN,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                o as i64,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(format!("mmap: {}", std::io::Error::last_os_error()));
        }
        use_window(p.cast(), stores);
        // SAFETY: the mapping made above; nothing refers to it after this.
        if unsafe { libc::munmap(p, WIN) } != 0 {
            return Err(format!("munmap: {}", std::io::Error::last_os_error()));
        }
        Ok(())
    };
    let us = per_iter(&windows(n, 14), one)?;
    // SAFETY: closing the descriptor opened above.
    unsafe { libc::close(fd) };
    println!("{us:.2}");
    Ok(())
}
