//! Who may have the device: the peer's credentials against the device
//! file's owner and mode, as `open(2)` would judge them.

use crate::format::Attr;
use crate::fs::perm::{Cred, R, W};

/// The supplementary groups of process `pid` (its `Groups:` line in
/// `/proc/<pid>/status`). The pid comes from SO_PEERCRED at connect; a
/// process that exited and whose pid was reused meanwhile is not a concern,
/// as the connection is then already closed.
pub fn groups_of(pid: i32) -> std::io::Result<Vec<u32>> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    Ok(parse_groups(&s))
}

fn parse_groups(status: &str) -> Vec<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .map(|g| {
            g.split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Could a process of `uid`, `gid` and `groups` open a file owned by
/// `f_uid`:`f_gid` with mode `mode` for reading (and writing, with
/// `write`)? Root may (as with CAP_DAC_OVERRIDE); otherwise the owner's, the
/// group's or the others' bits decide, in that order, as the kernel's
/// permission check does ([`Cred::permits`]).
pub fn may_open(
    f_uid: u32,
    f_gid: u32,
    mode: u32,
    uid: u32,
    gid: u32,
    groups: &[u32],
    write: bool,
) -> bool {
    let cred = Cred {
        uid,
        gid,
        groups: groups.to_vec(),
    };
    let file = Attr {
        mode,
        uid: f_uid,
        gid: f_gid,
        ..Default::default()
    };
    cred.permits(&file, if write { R | W } else { R })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_group_and_other_bits_decide_in_that_order() {
        // rw-r----- root:disk
        let (u, g, m) = (0, 6, 0o640);
        assert!(may_open(u, g, m, 0, 0, &[], true), "root");
        assert!(
            may_open(u, g, m, 1000, 100, &[6], false),
            "a member of disk reads"
        );
        assert!(
            !may_open(u, g, m, 1000, 100, &[6], true),
            "but does not write"
        );
        assert!(!may_open(u, g, m, 1000, 100, &[], false), "others nothing");
        // The owner's bits apply to the owner even if the group's are wider.
        assert!(!may_open(1000, 100, 0o070, 1000, 100, &[], false));
        assert!(may_open(1000, 100, 0o600, 1000, 5, &[], true));
    }

    #[test]
    fn groups_come_from_the_status_line() {
        let s = "Name:\tx\nUid:\t1 1 1 1\nGroups:\t4 24 27 \nNgid:\t0\n";
        assert_eq!(parse_groups(s), vec![4, 24, 27]);
        assert_eq!(parse_groups("Name:\tx\n"), Vec::<u32>::new());
    }

    #[test]
    fn this_process_has_a_groups_line() {
        assert!(groups_of(std::process::id() as i32).is_ok());
    }
}
