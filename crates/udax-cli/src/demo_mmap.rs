//! The mmap part of `udax demo`: the DAX fault engine at work.
#![allow(unsafe_code)]

use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};
use udax::fs::Fs;
use udax::{MapFlags, Prot};

fn e<T, E: std::fmt::Display>(r: Result<T, E>) -> Result<T, String> {
    r.map_err(|e| e.to_string())
}

fn check(ok: bool, what: &str) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(format!("demo check failed: {what}"))
    }
}

static SIG_CODE: AtomicI32 = AtomicI32::new(0);
static SIG_ADDR: AtomicUsize = AtomicUsize::new(0);

extern "C" fn on_sigbus(_sig: i32, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SAFETY: SA_SIGINFO handlers get a valid siginfo from the kernel.
    let (code, addr) = unsafe { ((*info).si_code, (*info).si_addr() as usize) };
    SIG_CODE.store(code, Ordering::SeqCst);
    SIG_ADDR.store(addr, Ordering::SeqCst);
    // Put a private page over the faulting one so the load can complete; the
    // demo drops the whole mapping right after. mmap is async-signal-safe.
    // SAFETY: the page belongs to the demo's own mapping.
    unsafe {
        libc::mmap(
            (addr & !4095) as *mut _,
            4096,
            libc::PROT_READ,
            libc::MAP_FIXED | libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
    }
}

fn kernel_load(p: *const u8) -> i32 {
    let mut fds = [0i32; 2];
    // SAFETY: a pipe of our own; write(2) reads one byte at `p`.
    unsafe {
        libc::pipe(fds.as_mut_ptr());
        let r = libc::write(fds[1], p.cast(), 1);
        let err = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
        libc::close(fds[0]);
        libc::close(fds[1]);
        if r < 0 {
            err
        } else {
            0
        }
    }
}

pub fn run(fs: &Fs) -> Result<(), String> {
    println!(
        "-- mmap: device memory mapped straight into this process (userfaultfd fault engine) --"
    );
    let f = e(fs.create("/mapped.bin", 0o644))?;
    e(f.set_len(8 << 20))?;
    let m1 = match f.mmap(0, 8 << 20, Prot::ReadWrite, MapFlags::SHARED) {
        Ok(m) => m,
        Err(err) => {
            println!("  mmap unavailable here ({err}); it needs userfaultfd (root, or vm.unprivileged_userfaultfd=1)");
            return Ok(());
        }
    };
    let m2 = e(f.mmap(0, 8 << 20, Prot::ReadWrite, MapFlags::SHARED))?;
    let (a, b) = (m1.as_ptr(), m2.as_ptr());
    // SAFETY: every access below stays inside the two 8 MiB mappings, which
    // live until the end of this function (or are dropped before the access).
    unsafe {
        let s0 = fs.dax_stats();
        let z = a.add(5 << 20).read_volatile();
        check(z == 0, "hole reads zero")?;
        let blocks = e(f.stat())?.blocks;
        println!(
            "  hole read: 0 through the zero page; blocks allocated: {blocks} (none), zero-page maps: {}",
            fs.dax_stats().zero_maps - s0.zero_maps
        );
        check(blocks == 0, "no block for a read")?;
        let _ = b.add(5 << 20).read_volatile();
        a.add(5 << 20).write_volatile(42);
        check(
            b.add(5 << 20).read_volatile() == 42,
            "second mapping sees store",
        )?;
        let s1 = fs.dax_stats();
        println!(
            "  store into the hole: allocated by the fault ({} allocation, {} KiB), the other mapping's zero page replaced: it reads {}",
            s1.fault_allocs - s0.fault_allocs,
            e(f.stat())?.blocks / 2,
            b.add(5 << 20).read_volatile()
        );
        let mut buf = [0u8; 1];
        e(f.read_at(&mut buf, 5 << 20))?;
        check(buf[0] == 42, "read_at sees the store")?;
        e(f.write_at(b"W", 1 << 20))?;
        check(
            a.add(1 << 20).read_volatile() == b'W',
            "mapping sees write_at",
        )?;
        println!("  read_at sees the store; the mapping sees write_at (no copies anywhere)");
        println!(
            "  2 MiB mappings: {} (4 KiB-entry mappings: {})",
            fs.dax_stats().pmd_maps,
            fs.dax_stats().pte_maps
        );
        let before = fs.dax_stats().flushed_pages;
        e(m1.msync(0, 8 << 20))?;
        a.add(1 << 20).write_volatile(7);
        let mid = fs.dax_stats().flushed_pages;
        e(m1.msync(0, 8 << 20))?;
        println!(
            "  msync: first flushed {} pages (those mapped by stores), after one more store: {} page",
            mid - before,
            fs.dax_stats().flushed_pages - mid
        );
        check(
            fs.dax_stats().flushed_pages - mid == 1,
            "msync flushes one page",
        )?;
    }
    drop(m2);
    // Truncate under a live mapping: the cut range raises SIGBUS.
    // SAFETY: sigaction is plain data for which all-zero bytes are valid.
    let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
    sa.sa_sigaction = on_sigbus as *const () as usize;
    sa.sa_flags = libc::SA_SIGINFO;
    // SAFETY: as above.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: valid sigaction structures; the old handler is restored below.
    unsafe { libc::sigaction(libc::SIGBUS, &sa, &mut old) };
    e(f.set_len(4096))?;
    let p = m1.as_ptr();
    // SAFETY: an address inside the mapping (8 MiB long); the kernel, not this
    // thread, touches it.
    let efault = kernel_load(unsafe { p.add(2 << 20) });
    // SAFETY: inside the mapping; the load raises SIGBUS, which the handler
    // above answers by putting a readable page there.
    let _ = unsafe { p.add(3 << 20).read_volatile() };
    // SAFETY: restores the previous disposition.
    unsafe { libc::sigaction(libc::SIGBUS, &old, std::ptr::null_mut()) };
    check(
        SIG_CODE.load(Ordering::SeqCst) == libc::BUS_ADRERR,
        "SIGBUS after truncate",
    )?;
    check(efault == libc::EFAULT, "EFAULT for the kernel")?;
    println!(
        "  truncate to 4 KiB under the mapping: a load at +3 MiB got SIGBUS (BUS_ADRERR at +{:#x}), a system call got EFAULT",
        SIG_ADDR.load(Ordering::SeqCst) - p as usize
    );
    drop(m1);
    let s = fs.dax_stats();
    println!(
        "  counters: faults {} (by the kernel in a system call {}), write faults {}, 2 MiB maps {}, 4 KiB maps {}, zero pages {}, allocations by fault {}, SIGBUS {}, ranges unmapped {}",
        s.faults, s.kernel_faults, s.write_faults, s.pmd_maps, s.pte_maps, s.zero_maps, s.fault_allocs, s.sigbus, s.invalidations
    );
    Ok(())
}
