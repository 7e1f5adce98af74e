//! Kernel DAX test scenarios re-created as C programs (tests/scenarios.c) and
//! run through the shim: generic/428 (no stale zero page after write), 647
//! (read/write with the buffer in a mapping of the same file), 413 (O_DIRECT
//! to and from a DAX mapping), 437 (private mapping copy-on-write), 462
//! (read(2) into a read-only mapping: EFAULT), 438/503
//! (faults and I/O racing with punch hole, zero range, collapse, truncate).

mod common;
use common::*;

#[test]
fn dax_scenarios_428_647_413_437_462_503_through_the_shim() {
    if !have("cc") {
        return;
    }
    let env = Env::new(64 << 20);
    let exe = cc(&env.host, "scenarios", &[]);
    let out = env.run(exe.to_str().unwrap(), &[&env.mount]);
    assert_eq!(
        stdout(&out),
        "g428=ok\ng647=ok\ng413=ok\ng437=ok\ng462=ok\ng503=ok\n",
        "stderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = env.fsck();
    assert!(r.clean, "fsck after the races: {:?}", r.problems);
}
