//! The calls that change a thread's or the process's credentials: passed
//! to libc unchanged, then announced to udax, which keeps each thread's
//! credentials between calls instead of asking the kernel for them (three
//! system calls) at every permission-checked call
//! (`udax::fs::perm::keep_credentials_per_thread`, switched on at load).
//! Announced after the change returns, so a call that starts after it
//! reads the new ones; a change by a raw system call is not seen (as no
//! raw file-system call is).

use libc::{c_char, c_int, gid_t, size_t, uid_t};

/// At load: keep credentials per thread, now that their changes announce
/// themselves through the functions below.
pub fn keep_at_load() {
    udax::fs::perm::keep_credentials_per_thread();
}

/// A libc function that may change credentials, forwarded, then announced.
macro_rules! announced {
    ($($name:ident($($a:ident: $t:ty),*);)*) => {
        $(
            /// # Safety
            /// As the libc function of the same name.
            #[no_mangle]
            pub unsafe extern "C" fn $name($($a: $t),*) -> c_int {
                let out = crate::boundary::entry::fwd!($name($($a),*));
                udax::fs::perm::credentials_changed();
                out
            }
        )*
    };
}

announced! {
    setuid(uid: uid_t);
    setgid(gid: gid_t);
    seteuid(uid: uid_t);
    setegid(gid: gid_t);
    setreuid(ruid: uid_t, euid: uid_t);
    setregid(rgid: gid_t, egid: gid_t);
    setresuid(ruid: uid_t, euid: uid_t, suid: uid_t);
    setresgid(rgid: gid_t, egid: gid_t, sgid: gid_t);
    setgroups(n: size_t, groups: *const gid_t);
    initgroups(user: *const c_char, group: gid_t);
    unshare(flags: c_int);
    setns(fd: c_int, nstype: c_int);
}

/// A file-system id's setter, forwarded, then announced unless it only
/// asked (an id of -1 changes nothing and answers the current one).
macro_rules! fs_id {
    ($($name:ident($t:ty);)*) => {
        $(
            /// # Safety
            /// As the libc function of the same name.
            #[no_mangle]
            pub unsafe extern "C" fn $name(id: $t) -> c_int {
                let out = crate::boundary::entry::fwd!($name(id));
                if id != <$t>::MAX {
                    udax::fs::perm::credentials_changed();
                }
                out
            }
        )*
    };
}

fs_id! {
    setfsuid(uid_t);
    setfsgid(gid_t);
}
