//! fio on udax through the shim, --thread, with crc32c verification of every
//! block it wrote: the psync engine (pread/pwrite) and the mmap engine (DAX
//! mappings, stores and loads).

mod common;
use common::*;

fn fio(engine: &str) {
    if !have("fio") {
        return;
    }
    let env = Env::new(128 << 20);
    // One file per job (udax.0.0, udax.1.0): jobs sharing a file would
    // overwrite each other's verified blocks.
    env.run("mkdir", &[&env.at("fio")]);
    let out = env.run(
        "fio",
        &[
            "--name=udax",
            "--thread",
            "--numjobs=2",
            &format!("--ioengine={engine}"),
            &format!("--directory={}", env.at("fio")),
            "--size=8m",
            "--bs=4k",
            "--rw=randwrite",
            "--verify=crc32c",
            "--do_verify=1",
            "--verify_fatal=1",
            "--group_reporting",
            "--output-format=terse",
            "--terse-version=3",
        ],
    );
    let s = stdout(&out);
    // terse v3: 3;version;jobname;groupid;error;read kB;... (see fio HOWTO)
    let f: Vec<&str> = s.trim().split(';').collect();
    assert!(f.len() > 50 && f[0] == "3", "fio output:\n{s}");
    assert_eq!(f[4], "0", "fio error field");
    let read_kb: u64 = f[5].parse().unwrap();
    let write_kb: u64 = f[46].parse().unwrap();
    assert_eq!(write_kb, 2 * 8 * 1024, "two jobs wrote 8 MiB each");
    assert_eq!(read_kb, 2 * 8 * 1024, "and read it all back to verify it");
    env.with_fs(|fs| {
        for j in 0..2 {
            let st = fs.stat(&format!("/fio/udax.{j}.0")).unwrap();
            assert_eq!(st.size, 8 << 20, "job {j}'s file");
        }
    });
}

#[test]
fn fio_psync_randwrite_verifies_crc32c() {
    fio("psync");
}

#[test]
fn fio_mmap_randwrite_verifies_crc32c() {
    fio("mmap");
}
