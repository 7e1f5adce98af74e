//! M5 and M14 for user accesses: SIGBUS past end of file (also after a
//! truncate), SIGSEGV for a store through a read-only mapping. One test in its
//! own binary, because it installs process-wide signal handlers.
#![allow(unsafe_code)]

mod common;

use common::{catch, caught, fresh};
use udax::{MapFlags, Prot};

/// `si_code` of a SIGSEGV for a permission fault (not exported by libc).
const SEGV_ACCERR: i32 = 2;

#[test]
fn m5_m14_user_access_past_eof_sigbus_and_store_to_read_only_sigsegv() {
    catch(libc::SIGBUS);
    catch(libc::SIGSEGV);
    let fs = fresh(64);
    let f = fs.create("/f", 0o644).unwrap();
    f.write_at(&[1u8; 6000], 0).unwrap();

    // Past end of file (rounded up to the page): SIGBUS, BUS_ADRERR, exact address.
    let m = f
        .mmap(0, 4 * 4096, Prot::ReadWrite, MapFlags::SHARED)
        .expect("mmap (needs userfaultfd)");
    let p = m.as_ptr();
    // SAFETY: inside the mapping; the access is expected to fault.
    let (sig, code, addr) = caught(|| unsafe { p.add(8192 + 10).write_volatile(1) });
    assert_eq!((sig, code), (libc::SIGBUS, libc::BUS_ADRERR));
    assert_eq!(addr, p as usize + 8192 + 10);
    // Inside the last partial page: fine.
    // SAFETY: inside the mapping, within EOF rounded up.
    let (sig, _, _) = caught(|| unsafe { p.add(8000).write_volatile(2) });
    assert_eq!(sig, 0);
    assert_eq!(fs.stat("/f").unwrap().size, 6000);

    // Truncate a mapped file: the cut pages raise SIGBUS.
    // SAFETY: inside the mapping.
    assert_eq!(unsafe { p.add(5000).read_volatile() }, 1);
    f.set_len(100).unwrap();
    // SAFETY: inside the mapping; expected to fault.
    let (sig, code, addr) = caught(|| unsafe {
        let _ = p.add(4096 + 5).read_volatile();
    });
    assert_eq!(
        (sig, code, addr),
        (libc::SIGBUS, libc::BUS_ADRERR, p as usize + 4096 + 5)
    );
    drop(m);

    // A store through a read-only mapping: SIGSEGV (SEGV_ACCERR), mapped page or hole.
    f.set_len(3 * 4096).unwrap();
    let ro = f.mmap(0, 3 * 4096, Prot::Read, MapFlags::SHARED).unwrap();
    let q = ro.as_ptr();
    // SAFETY: inside the mapping; reads are allowed.
    assert_eq!(unsafe { q.read_volatile() }, 1);
    // SAFETY: inside the mapping; the store is expected to fault.
    let (sig, code, addr) = caught(|| unsafe { q.add(3).write_volatile(9) });
    assert_eq!(
        (sig, code, addr),
        (libc::SIGSEGV, SEGV_ACCERR, q as usize + 3)
    );
    // SAFETY: as above, on a hole page.
    let (sig, code, _) = caught(|| unsafe { q.add(2 * 4096).write_volatile(9) });
    assert_eq!((sig, code), (libc::SIGSEGV, SEGV_ACCERR));
    drop(ro);
    let mut b = [0u8; 1];
    f.read_at(&mut b, 3).unwrap();
    assert_eq!(b[0], 1, "the file is unchanged");
    assert_eq!(f.stat().unwrap().blocks, 8, "the hole stayed a hole");
}
