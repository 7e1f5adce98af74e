//! `udax demo`: the main job, end to end, on a memfd device.

use std::sync::Arc;
use udax::device::{self, CrashDevice, Device, RamDevice, Survivors};
use udax::fs::{falloc, fsck, Fs, MkfsOptions};

fn e<T, E: std::fmt::Display>(r: Result<T, E>) -> Result<T, String> {
    r.map_err(|e| e.to_string())
}

pub fn run() -> Result<(), String> {
    println!("== udax demo ==");
    let dev = e(device::open("memfd:256M", &device::OpenOptions::default()))?;
    let i = dev.info();
    println!(
        "device: {} ({:?}, persistence {:?}, flush {:?})",
        i.path,
        i.kind,
        i.persistence,
        device::detect_flush_instr()
    );
    let sb = e(Fs::mkfs(
        &*dev,
        &MkfsOptions {
            label: "demo".into(),
            ..Default::default()
        },
    ))?;
    println!(
        "mkfs: uuid {}, data area {} MiB",
        sb.uuid_str(),
        (sb.data_blocks() * 4096) >> 20
    );
    let fs = e(Fs::mount(dev.clone()))?;

    e(fs.mkdir("/docs", 0o755))?;
    e(fs.mkdir("/docs/notes", 0o755))?;
    let f = e(fs.create("/docs/notes/hello.txt", 0o644))?;
    e(f.write_at(
        b"Hello from user-space DAX: this byte went straight to device memory.\n",
        0,
    ))?;
    let mut buf = vec![0u8; 128];
    let n = e(f.read_at(&mut buf, 0))?;
    print!(
        "write/read: /docs/notes/hello.txt -> {}",
        String::from_utf8_lossy(&buf[..n])
    );

    let big = e(fs.create("/docs/big.bin", 0o644))?;
    let data: Vec<u8> = (0..(32u32 << 20)).map(|i| (i % 251) as u8).collect();
    let t = std::time::Instant::now();
    e(big.write_at(&data, 0))?;
    let dt = t.elapsed();
    let huge = (0..16).filter(|c| matches!(big.iomap(c * 512), udax::fs::extent::Lookup::Mapped { dev_blk, len } if dev_blk % 512 == 0 && len >= 512)).count();
    println!("large file: 32 MiB written in {:.1} ms ({:.1} GB/s); {huge}/16 2 MiB pieces are 2 MiB-aligned extents", dt.as_secs_f64() * 1e3, 32.0 * 1.048576e6 / dt.as_secs_f64() / 1e9);

    let sp = e(fs.create("/sparse.img", 0o644))?;
    e(sp.write_at(b"head", 0))?;
    e(sp.write_at(b"tail", 1 << 30))?;
    let st = e(sp.stat())?;
    let mut hole = [1u8; 16];
    e(sp.read_at(&mut hole, 512 << 20))?;
    println!(
        "sparse file: size {} bytes, {} KiB allocated; a read in the hole gives {:?}...",
        st.size,
        st.blocks / 2,
        &hole[..4]
    );

    e(big.set_len(5 << 20))?;
    println!(
        "truncate: big.bin to 5 MiB -> {} KiB allocated, free {} MiB",
        e(big.stat())?.blocks / 2,
        (fs.statfs().free_blocks * 4096) >> 20
    );
    e(big.fallocate(falloc::PUNCH_HOLE | falloc::KEEP_SIZE, 1 << 20, 2 << 20))?;
    println!(
        "fallocate: punched 2 MiB -> {} KiB allocated, size still {}",
        e(big.stat())?.blocks / 2,
        e(big.stat())?.size
    );
    e(big.fallocate(falloc::COLLAPSE_RANGE, 1 << 20, 2 << 20))?;
    println!(
        "fallocate: collapsed the hole -> size {}",
        e(big.stat())?.size
    );
    e(fs.rename("/docs/notes/hello.txt", "/hello.txt"))?;
    e(fs.link("/hello.txt", "/docs/hello-link.txt"))?;
    println!(
        "rename + link: /hello.txt has {} links",
        e(fs.stat("/hello.txt"))?.nlink
    );
    // Reflink: share the blocks, then copy on write.
    // (Free blocks for data: metadata blocks, which the clone's refcount
    // tree takes, added back.)
    let data_free = |st: udax::fs::StatFs| st.free_blocks + st.metadata_bytes / st.block_size;
    let free0 = data_free(fs.statfs());
    let copy = e(fs.create("/big-clone.bin", 0o644))?;
    e(fs.clone_file(&big, &copy))?;
    let free1 = data_free(fs.statfs());
    e(copy.write_at(b"changed", 4096))?;
    let mut orig = [0u8; 7];
    e(big.read_at(&mut orig, 4096))?;
    if &orig == b"changed" || free0 != free1 {
        return Err("reflink: the clone was not shared, or the write leaked".into());
    }
    println!(
        "reflink: cloned {} MiB using {} blocks; a 7-byte write to the clone copied {} block(s), the original is unchanged",
        copy.len() >> 20,
        free0 - free1,
        free1 - fs.statfs().free_blocks
    );
    crate::demo_mmap::run(&fs)?;
    drop((f, big, sp, copy));
    e(fs.unmount())?;
    let r = e(fsck(dev.clone()))?;
    println!(
        "fsck: {} ({} files, {} directories, {} blocks used)",
        if r.clean { "clean" } else { "NOT CLEAN" },
        r.files,
        r.directories,
        r.used_blocks
    );

    // Crash and recovery on the crash-simulating device.
    println!("-- crash and recovery (CrashDevice: stores lost unless flushed and fenced) --");
    let cdev = Arc::new(CrashDevice::new(16 << 20));
    e(Fs::mkfs(&*cdev, &MkfsOptions::default()))?;
    let fs = e(Fs::mount(cdev.clone()))?;
    let a = e(fs.create("/kept.txt", 0o644))?;
    e(a.write_at(b"fsynced before the crash", 0))?;
    e(a.fsync())?;
    cdev.start_recording();
    e(fs.rename("/kept.txt", "/renamed.txt"))?;
    let b = e(fs.create("/inflight.txt", 0o644))?;
    e(b.write_at(&[7u8; 10000], 0))?;
    let points = cdev.crash_points();
    let mut outcomes = std::collections::BTreeMap::new();
    for p in 0..=points {
        let img = cdev.crash_image(p, &Survivors::Random { seed: p as u64 });
        let d: Arc<dyn Device> = Arc::new(RamDevice::from_image(img));
        let rep = e(fsck(d.clone()))?;
        let fs2 = e(Fs::mount(d))?;
        let names: Vec<String> = e(fs2.read_dir("/"))?.into_iter().map(|x| x.name).collect();
        let kept = names.iter().any(|n| n == "kept.txt" || n == "renamed.txt");
        *outcomes
            .entry(format!(
                "{names:?} fsck {}",
                if rep.clean { "clean" } else { "NOT CLEAN" }
            ))
            .or_insert(0) += 1;
        if !kept || !rep.clean {
            return Err(format!(
                "crash point {p}: fsynced file lost or fsck unclean"
            ));
        }
    }
    println!(
        "crashed at each of {} fences (random survivors of unfenced lines); recovered states:",
        points + 1
    );
    for (k, v) in outcomes {
        println!("  {v} x {k}");
    }
    let st = fs.journal_stats();
    println!(
        "journal: {} commits, {} fences, log {} bytes used",
        st.commits, st.fences, st.log_used
    );
    println!("== demo done: every step checked ==");
    Ok(())
}
