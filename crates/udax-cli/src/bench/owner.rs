//! P10 and P12: a client of the device's owner (`udax serve`, a separate
//! process started for the run; docs/multiprocess.md).
//!
//! * P10-rtt: one round trip to the owner (`Ping`), in us; baseline: a bare
//!   round trip of a 24-byte message over a `SOCK_SEQPACKET` socket pair
//!   between two threads (the transport alone).
//! * P10-read: 4 KiB random reads of a file in a client, straight from the
//!   device under a lease, against the same reads embedded (the file system
//!   mounted in this process) on the same device file and offsets; target
//!   >= 0.9x.
//! * P10-write: 4 KiB random overwrites of the same file's allocated blocks
//!   in a client (in place under the lease) against embedded.
//! * P10-mmap: map the allocated file in a client and write-touch every
//!   4 KiB page (the client's fault engine, from its lease), against the
//!   same embedded; P10-hole: the same over a hole, so every fault asks the
//!   owner for blocks (`Iomap`), against embedded.
//! * P14-client: map 64 KiB of the allocated file at a random offset, store
//!   to each of its 16 pages, unmap, in a client, against the same on a
//!   tmpfs file through the kernel.
//! * P12-stat: `stat` of one file in a client, answered by its attribute
//!   cache (nothing changes meanwhile); P12-create: create + unlink of a
//!   new file through the owner; both against the same system calls on
//!   tmpfs. P11-append: append 4 KiB + fdatasync in a client vs tmpfs.

use super::mmap::touch;
use super::{e, gbps, rate_over, repeat, res, Cfg, Res};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use udax::client::{Client, ConnectOptions};
use udax::device;
use udax::fs::{Fs, MkfsOptions};
use udax::{MapFlags, Prot};

/// An owner process for the run; stopped (SIGTERM, a checkpoint) when dropped.
struct Owner(Child);

impl Drop for Owner {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own unreaped child's pid.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

/// The bare socket round trip: 24 bytes to an echoing thread and back.
fn bare_rtt(reps: usize, n: u64) -> Result<super::Stat, String> {
    use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType};
    let (a, b) = e(rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    ))?;
    let echo = std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        while let Ok((k, _)) = rustix::net::recv(&b, &mut buf, RecvFlags::empty()) {
            if k == 0 || rustix::net::send(&b, &buf[..k], SendFlags::empty()).is_err() {
                break;
            }
        }
    });
    let mut buf = [0u8; 64];
    let r = repeat(reps, || {
        let t = Instant::now();
        for _ in 0..n {
            e(rustix::net::send(&a, &[0u8; 24], SendFlags::empty()))?;
            e(rustix::net::recv(&a, &mut buf, RecvFlags::empty()))?;
        }
        Ok(t.elapsed().as_secs_f64() * 1e6 / n as f64)
    });
    drop(a);
    let _ = echo.join();
    r
}

/// The kernel's P14 baseline: a tmpfs file of `size` bytes (allocated);
/// per window, map 64 KiB shared, store to its 16 pages, unmap.
fn tmpfs_churn(tmp: &Path, size: u64, reps: usize, windows: &[u64]) -> Result<super::Stat, String> {
    let path = tmp.join("churn");
    let f = e(std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path))?;
    e(rustix::fs::fallocate(
        &f,
        rustix::fs::FallocateFlags::empty(),
        0,
        size,
    ))?;
    let r = rate_over(reps, windows, |o| {
        // SAFETY: a fresh shared mapping of our own file, unmapped below.
        let p = e(unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                65536,
                rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
                rustix::mm::MapFlags::SHARED,
                &f,
                o,
            )
        })?;
        touch(p.cast(), 65536);
        // SAFETY: the mapping made above.
        e(unsafe { rustix::mm::munmap(p, 65536) })
    });
    let _ = std::fs::remove_file(&path);
    r
}

pub(super) fn run(c: &Cfg, tmp: &Path) -> Result<Vec<Res>, String> {
    let span = (c.rand_span / 4).max(16 << 20);
    let dev = tmp.join("owner.img");
    let spec = dev.to_str().ok_or("tmpfs path is not UTF-8")?.to_string();
    let d = e(device::open(
        &spec,
        &device::OpenOptions {
            create_size: Some(span + (64 << 20)),
        },
    ))?;
    e(Fs::mkfs(&*d, &MkfsOptions::default()))?;
    let fs = e(Fs::mount(d))?;
    let f = e(fs.create("/rand", 0o644))?;
    e(f.write_at(&vec![1u8; span as usize], 0))?;
    e(fs.create("/stat", 0o644))?;
    let blocks = span / 4096;
    let mut rng = fastrand::Rng::with_seed(10);
    let offs: Vec<u64> = (0..c.rand_ops / 2)
        .map(|_| rng.u64(0..blocks) * 4096)
        .collect();
    let mut page = vec![0u8; 4096];
    let embedded = rate_over(c.reps, &offs, |o| e(f.read_at(&mut page, o)).map(drop))?;
    let embedded_w = rate_over(c.reps, &offs, |o| e(f.write_at(&page, o)).map(drop))?;
    let hole = 16u64 << 20;
    let embedded_map = repeat(c.reps, || {
        let t = Instant::now();
        let m = e(f.mmap(0, span as usize, Prot::ReadWrite, MapFlags::SHARED))?;
        touch(m.as_ptr(), span as usize);
        drop(m);
        Ok(gbps(span, t))
    })?;
    let embedded_hole = repeat(c.reps, || {
        let h = e(fs.create("/hole", 0o644))?;
        e(h.set_len(hole))?;
        let t = Instant::now();
        let m = e(h.mmap(0, hole as usize, Prot::ReadWrite, MapFlags::SHARED))?;
        touch(m.as_ptr(), hole as usize);
        drop(m);
        let r = gbps(hole, t);
        drop(h);
        e(fs.unlink("/hole"))?;
        Ok(r)
    })?;
    drop(f);
    e(fs.unmount())?;

    let run_dir = tmp.join("run");
    let exe = e(std::env::current_exe())?;
    let child = e(Command::new(exe)
        .args(["serve", "--foreground", "--idle", "0", &spec])
        .env("UDAX_RUNTIME_DIR", &run_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn())?;
    let _owner = Owner(child);
    let opts = ConnectOptions {
        write: true,
        runtime_dir: Some(run_dir),
        ..Default::default()
    };
    let t = Instant::now();
    let client = loop {
        match Client::connect(&dev, &opts) {
            Ok(cl) => break cl,
            Err(_) if t.elapsed() < Duration::from_secs(20) => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(err) => return Err(format!("the owner does not answer: {err}")),
        }
    };
    let pings = 20_000u64;
    let bare = bare_rtt(c.reps, pings)?;
    let rtt = repeat(c.reps, || {
        let t = Instant::now();
        for _ in 0..pings {
            e(client.ping())?;
        }
        Ok(t.elapsed().as_secs_f64() * 1e6 / pings as f64)
    })?;
    let g = e(client.open("/rand", true, false, 0))?;
    let remote = rate_over(c.reps, &offs, |o| e(g.read_at(&mut page, o)).map(drop))?;
    let remote_w = rate_over(c.reps, &offs, |o| e(g.write_at(&page, o)).map(drop))?;
    let remote_map = repeat(c.reps, || {
        let t = Instant::now();
        let m = e(g.mmap(0, span as usize, Prot::ReadWrite, MapFlags::SHARED))?;
        touch(m.as_ptr(), span as usize);
        drop(m);
        Ok(gbps(span, t))
    })?;
    let remote_hole = repeat(c.reps, || {
        let h = e(client.open("/hole", true, true, 0o644))?;
        e(h.set_len(hole))?;
        let t = Instant::now();
        let m = e(h.mmap(0, hole as usize, Prot::ReadWrite, MapFlags::SHARED))?;
        touch(m.as_ptr(), hole as usize);
        drop(m);
        let r = gbps(hole, t);
        drop(h);
        e(client.unlink("/hole"))?;
        Ok(r)
    })?;
    let windows: Vec<u64> = offs.iter().take(2000).map(|o| o / 65536 * 65536).collect();
    let churn = rate_over(c.reps, &windows, |o| {
        let m = e(g.mmap(o, 65536, Prot::ReadWrite, MapFlags::SHARED))?;
        touch(m.as_ptr(), 65536);
        drop(m);
        Ok(())
    })?;
    drop(g);
    let host_churn = tmpfs_churn(tmp, span, c.reps, &windows)?;

    let n = c.file_ops * 10;
    let idx: Vec<u64> = (0..n).collect();
    let cstat = rate_over(c.reps, &idx, |_| e(client.stat("/stat")).map(drop))?;
    let ccreate = rate_over(c.reps, &idx, |i| {
        let p = format!("/c{i}");
        e(client.create(&p, 0o644))?;
        e(client.unlink(&p))
    })?;
    let host = tmp.join("stat");
    e(std::fs::write(&host, b""))?;
    let hstat = rate_over(c.reps, &idx, |_| e(std::fs::metadata(&host)).map(drop))?;
    let hcreate = rate_over(c.reps, &idx, |i| {
        let p = tmp.join(format!("c{i}"));
        drop(e(std::fs::File::create(&p))?);
        e(std::fs::remove_file(&p))
    })?;
    // P11: append 4 KiB + fdatasync, in a client (an `Append` round trip and
    // a sync through the owner) vs write + fdatasync on tmpfs.
    let page4k = vec![0xA5u8; 4096];
    let appends: Vec<u64> = (0..c.file_ops).collect();
    let cappend = {
        let f = e(client.open("/append", true, true, 0o644))?;
        let r = rate_over(c.reps, &appends, |_| {
            e(f.append(&page4k))?;
            e(f.sync_data())
        })?;
        drop(f);
        e(client.unlink("/append"))?;
        r
    };
    let happend = {
        use std::io::Write;
        let p = tmp.join("append");
        let mut f = e(std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p))?;
        let r = rate_over(c.reps, &appends, |_| {
            e(f.write_all(&page4k))?;
            e(f.sync_data())
        })?;
        drop(f);
        e(std::fs::remove_file(&p))?;
        r
    };
    drop(client);
    Ok(vec![
        res(
            "P11-append",
            "append 4 KiB + fdatasync in a client of the owner vs write + fdatasync on tmpfs",
            "Mops/s",
            cappend,
            Some(happend),
            None,
        ),
        res(
            "P10-rtt",
            "one round trip to the device's owner (Ping over its socket)",
            "us",
            rtt,
            Some(bare),
            None,
        ),
        res(
            "P10-read",
            "4 KiB random read in a client of the owner (straight from the device under a lease) vs embedded",
            "Mops/s",
            remote,
            Some(embedded),
            None,
        ),
        res(
            "P10-write",
            "4 KiB random overwrite in a client of the owner (in place, straight to the device) vs embedded",
            "Mops/s",
            remote_w,
            Some(embedded_w),
            None,
        ),
        res(
            "P10-mmap",
            "map an allocated file in a client and write-touch every 4 KiB page vs embedded",
            "GB/s",
            remote_map,
            Some(embedded_map),
            None,
        ),
        res(
            "P10-hole",
            "map a 16 MiB hole in a client and write-touch every page (each fault asks the owner for blocks) vs embedded",
            "GB/s",
            remote_hole,
            Some(embedded_hole),
            None,
        ),
        res(
            "P14-client",
            "64 KiB mmap + 16 stores + munmap of an allocated file in a client vs the same on tmpfs through the kernel",
            "Mops/s",
            churn,
            Some(host_churn),
            None,
        ),
        res(
            "P12-stat",
            "stat of one file in a client (its attribute cache; a round trip after a change of the file or of a name on its path) vs stat(2) on tmpfs",
            "Mops/s",
            cstat,
            Some(hstat),
            None,
        ),
        res(
            "P12-create",
            "create + unlink through the owner vs the system calls on tmpfs",
            "Mops/s",
            ccreate,
            Some(hcreate),
            None,
        ),
    ])
}
