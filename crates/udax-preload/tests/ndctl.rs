//! ndctl's dax-pmd and dax-poison protocols (SPEC M7, M11, E1-E4 for
//! unmodified programs), re-created as a C program (tests/ndctl.c) that runs
//! through the shim: FIEMAP finds a 2 MiB-aligned extent; a 2 MiB-aligned
//! mapping of it; mremap of part of it; O_DIRECT I/O with the buffer in the
//! mapping (faulted and not); fork with the 2 MiB page mapped; a read fault
//! then a store; MAP_SYNC; MADV_SOFT_OFFLINE refused; MADV_HWPOISON raising
//! SIGBUS BUS_MCEERR_AR at the page; EIO from pread; punch + rewrite clearing
//! the error. On a hugetlbfs device the mapping uses real 2 MiB pages.

mod common;
use common::*;

/// What differs between the devices: the kernel page size of the mapping, the
/// neighbour of the bad page, and the page after the clear.
struct Want {
    page_kb: &'static str,
    neighbour: &'static str,
    after_clear: &'static str,
}

fn run_protocol(env: &Env, w: Want) {
    let exe = cc(&env.host, "ndctl", &[]);
    env.write_udax("/dax", &bytes(8 << 20, 11));
    let out = env.run(
        exe.to_str().unwrap(),
        &[&env.at("dax"), env.host.to_str().unwrap()],
    );
    let text = stdout(&out);
    let mut want = vec![
        "fiemap=0",
        "huge_extent=found",
        "mmap_aligned=yes",
        "anon_after_mremap=ok",
        "directio_0=ok",
        "directio_1=ok",
        "directio_2=ok",
        "directio_3=ok",
        "directio_4=ok",
        "mmap_sync=ok",
        "sigaction_reports_own=yes",
        "soft_offline=refused",
        "hwpoison_sigbus=BUS_MCEERR_AR",
        "hwpoison_addr=exact",
        "access_after=BUS_MCEERR_AR",
        "pread_poisoned=EIO",
        "clear=ok",
        "pread_after_clear=new_data",
        "signal_reports_own=yes",
    ];
    let kb = format!("page_kb={}", w.page_kb);
    let nb = format!("neighbour={}", w.neighbour);
    let ac = format!("after_clear={}", w.after_clear);
    want.extend([kb.as_str(), nb.as_str(), ac.as_str()]);
    for w in &want {
        assert!(text.lines().any(|l| l == *w), "want {w} in:\n{text}");
    }
    // mremap of part of a DAX mapping: refused or done, both as the kernel.
    assert!(
        text.contains("mremap=refused") || text.contains("mremap=moved"),
        "{text}"
    );
    // The bad page was part of a 2 MiB mapping (lsb 21) or of a 4 KiB one.
    assert!(
        text.contains("hwpoison_lsb=21") || text.contains("hwpoison_lsb=12"),
        "{text}"
    );
    let r = env.fsck();
    assert!(r.clean, "{:?}", r.problems);
    // Punch + rewrite gave the file a new block: the bad one is no file's
    // any more (kept out of use until `udax clear-poison`).
    assert_eq!(r.bad_blocks.len(), 1, "{:?}", r.bad_blocks);
    assert_eq!(r.bad_blocks[0].owners, vec![udax::fs::Owner::Free]);
}

#[test]
fn ndctl_dax_pmd_and_dax_poison_protocols_through_the_shim() {
    if !have("cc") {
        return;
    }
    let env = Env::new(64 << 20);
    run_protocol(
        &env,
        Want {
            page_kb: "4",
            neighbour: "ok",
            after_clear: "new_data",
        },
    );
}

#[test]
fn ndctl_dax_pmd_on_a_hugetlbfs_device_maps_real_2mib_pages() {
    if !have("cc") {
        return;
    }
    let require = std::env::var("UDAX_REQUIRE_HUGEPAGES").is_ok_and(|v| v == "1");
    let Some(dir) = std::env::var_os("UDAX_HUGETLBFS") else {
        assert!(
            !require,
            "UDAX_REQUIRE_HUGEPAGES=1 but UDAX_HUGETLBFS is not set"
        );
        eprintln!("SKIPPED: UDAX_HUGETLBFS (a hugetlbfs mount) is not set");
        return;
    };
    match Env::on_dir(std::path::Path::new(&dir), 32 << 20) {
        // Real 2 MiB pages. The 2 MiB page is the unit of loss, as for a
        // hugetlb or 2 MiB device-dax page: the neighbour is lost with the bad
        // page (lsb 21). After punch + rewrite the new block is not 2 MiB
        // aligned, which a hugetlbfs device cannot map: the next fault moves
        // the chunk to an aligned extent (docs/dax.md) and the mapping shows
        // the new data, as read(2) does.
        Ok(env) => run_protocol(
            &env,
            Want {
                page_kb: "2048",
                neighbour: "BUS_MCEERR_AR,21",
                after_clear: "new_data",
            },
        ),
        Err(e) => {
            assert!(
                !require,
                "UDAX_REQUIRE_HUGEPAGES=1 but no hugetlbfs device: {e}"
            );
            eprintln!("SKIPPED: no device on hugetlbfs {dir:?}: {e}");
        }
    }
}
