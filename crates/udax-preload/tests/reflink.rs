//! Reflink through the shim (SPEC R1 for unmodified programs): `cp
//! --reflink=always` shares the blocks (FICLONE), and a C program's
//! FICLONERANGE / FIDEDUPERANGE get the kernel's answers; the device then
//! shows the sharing. A store through a shared mapping onto cloned blocks
//! goes to a copy (client mode, the shim's default).

mod common;
use common::*;

#[test]
fn cp_reflink_always_shares_the_blocks() {
    if !have("cp") {
        return;
    }
    let env = Env::new(64 << 20);
    let data = bytes(5 << 20, 7);
    env.write_udax("/a", &data);
    env.run("cp", &["--reflink=always", &env.at("a"), &env.at("b")]);
    let (shared, same) = env.with_fs(|fs| {
        let b = fs.open("/b", &udax::fs::OpenOptions::read_only()).unwrap();
        (b.shared_blocks(), read_all(fs, "/b") == data)
    });
    assert!(same, "the clone reads the same bytes");
    assert_eq!(shared, (5 << 20) / 4096, "every block is shared");
    let r = env.fsck();
    assert!(r.clean, "{:?}", r.problems);
    assert_eq!(r.used_blocks, (5 << 20) / 4096, "the clone used no space");
}

#[test]
fn ficlonerange_and_fideduperange_answer_as_the_kernel() {
    if !have("cc") {
        return;
    }
    let env = Env::new(64 << 20);
    let exe = cc(&env.host, "reflink", &[]);
    let data = bytes(16384, 9);
    env.write_udax("/src", &data);
    env.write_udax("/same", &data);
    let mut other = data.clone();
    other[9000] ^= 1;
    env.write_udax("/diff", &other);
    let out = env.run(
        exe.to_str().unwrap(),
        &[&env.mount, env.host.to_str().unwrap()],
    );
    let text = stdout(&out);
    for want in [
        "ficlonerange=0",
        "ficlonerange_unaligned=-1,EINVAL",
        "ficlone_from_host=-1,EXDEV",
        "fideduperange=0",
        "same=0,16384",
        "diff=1,0",
    ] {
        assert!(text.lines().any(|l| l == want), "want {want} in:\n{text}");
    }
    env.with_fs(|fs| {
        let dst = read_all(fs, "/dst");
        assert_eq!(dst, data[4096..12288].to_vec());
        let same = fs
            .open("/same", &udax::fs::OpenOptions::read_only())
            .unwrap();
        assert_eq!(same.shared_blocks(), 4);
        let diff = fs
            .open("/diff", &udax::fs::OpenOptions::read_only())
            .unwrap();
        assert_eq!(diff.shared_blocks(), 0);
        assert_eq!(read_all(fs, "/diff"), other);
    });
    let r = env.fsck();
    assert!(r.clean, "{:?}", r.problems);
}

#[test]
fn a_mapped_store_onto_blocks_two_clones_share_goes_to_a_copy() {
    if !have("cc") || !have("timeout") {
        return;
    }
    let env = Env::new(64 << 20);
    let exe = cc(&env.host, "reflink_mmap", &[]);
    // Under a timeout: a regression in the fault path could hang the program.
    let out = env.run("timeout", &["60", exe.to_str().unwrap(), &env.mount]);
    let text = stdout(&out);
    for want in [
        "clone_to_g=0",
        "clone_in_f=0",
        "g=unchanged",
        "f_head=unchanged",
        "f_stored=yes",
    ] {
        assert!(text.lines().any(|l| l == want), "want {want} in:\n{text}");
    }
    let r = env.fsck();
    assert!(r.clean, "{:?}", r.problems);
}
