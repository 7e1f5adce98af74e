//! The real libc functions, found with `dlsym(RTLD_NEXT, name)` on first use.
//!
//! Each `real::name()` returns the next definition of `name` after this library
//! in the lookup order (normally glibc's), or `None` when no library defines it
//! (the caller then fails with ENOSYS). The address is cached in an atomic:
//! resolving twice from two threads is harmless (both find the same address).

use libc::{c_char, c_int, c_uint, c_ulong, c_void, mode_t, off64_t, size_t, ssize_t};
use std::sync::atomic::{AtomicPtr, Ordering};

/// `RTLD_NEXT` of glibc (`((void *) -1l)`).
const RTLD_NEXT: *mut c_void = -1isize as *mut c_void;

fn resolve(slot: &AtomicPtr<c_void>, name: &'static [u8]) -> *mut c_void {
    // ORDERING: Acquire pairs with the Release below; the pointee is code, so
    // nothing else is published through it.
    let p = slot.load(Ordering::Acquire);
    if !p.is_null() {
        return p;
    }
    // SAFETY: `name` is a NUL-terminated literal (the macro appends "\0");
    // dlsym has no other precondition.
    let p = unsafe { libc::dlsym(RTLD_NEXT, name.as_ptr().cast()) };
    // ORDERING: pairs with the Acquire above; racing resolvers store the
    // same address.
    slot.store(p, Ordering::Release);
    p
}

macro_rules! real_fns {
    ($($name:ident : $ty:ty;)*) => {
        $(
            #[allow(dead_code)]
            pub fn $name() -> Option<$ty> {
                static SLOT: AtomicPtr<c_void> = AtomicPtr::new(std::ptr::null_mut());
                let p = resolve(&SLOT, concat!(stringify!($name), "\0").as_bytes());
                // SAFETY: `p` is the address of the C function `$name` as
                // exported by libc, whose prototype is `$ty` (glibc headers, x86-64).
                (!p.is_null()).then(|| unsafe { std::mem::transmute::<*mut c_void, $ty>(p) })
            }
        )*
    };
}

type Stat = libc::stat64;

real_fns! {
    setuid: unsafe extern "C" fn(libc::uid_t) -> c_int;
    setgid: unsafe extern "C" fn(libc::gid_t) -> c_int;
    seteuid: unsafe extern "C" fn(libc::uid_t) -> c_int;
    setegid: unsafe extern "C" fn(libc::gid_t) -> c_int;
    setreuid: unsafe extern "C" fn(libc::uid_t, libc::uid_t) -> c_int;
    setregid: unsafe extern "C" fn(libc::gid_t, libc::gid_t) -> c_int;
    setresuid: unsafe extern "C" fn(libc::uid_t, libc::uid_t, libc::uid_t) -> c_int;
    setresgid: unsafe extern "C" fn(libc::gid_t, libc::gid_t, libc::gid_t) -> c_int;
    setgroups: unsafe extern "C" fn(size_t, *const libc::gid_t) -> c_int;
    initgroups: unsafe extern "C" fn(*const c_char, libc::gid_t) -> c_int;
    unshare: unsafe extern "C" fn(c_int) -> c_int;
    setns: unsafe extern "C" fn(c_int, c_int) -> c_int;
    setfsuid: unsafe extern "C" fn(libc::uid_t) -> c_int;
    setfsgid: unsafe extern "C" fn(libc::gid_t) -> c_int;
    open: unsafe extern "C" fn(*const c_char, c_int, ...) -> c_int;
    open64: unsafe extern "C" fn(*const c_char, c_int, ...) -> c_int;
    openat: unsafe extern "C" fn(c_int, *const c_char, c_int, ...) -> c_int;
    openat64: unsafe extern "C" fn(c_int, *const c_char, c_int, ...) -> c_int;
    creat: unsafe extern "C" fn(*const c_char, mode_t) -> c_int;
    creat64: unsafe extern "C" fn(*const c_char, mode_t) -> c_int;
    close: unsafe extern "C" fn(c_int) -> c_int;
    close_range: unsafe extern "C" fn(c_uint, c_uint, c_int) -> c_int;
    read: unsafe extern "C" fn(c_int, *mut c_void, size_t) -> ssize_t;
    write: unsafe extern "C" fn(c_int, *const c_void, size_t) -> ssize_t;
    pread: unsafe extern "C" fn(c_int, *mut c_void, size_t, off64_t) -> ssize_t;
    pread64: unsafe extern "C" fn(c_int, *mut c_void, size_t, off64_t) -> ssize_t;
    pwrite: unsafe extern "C" fn(c_int, *const c_void, size_t, off64_t) -> ssize_t;
    pwrite64: unsafe extern "C" fn(c_int, *const c_void, size_t, off64_t) -> ssize_t;
    readv: unsafe extern "C" fn(c_int, *const libc::iovec, c_int) -> ssize_t;
    writev: unsafe extern "C" fn(c_int, *const libc::iovec, c_int) -> ssize_t;
    preadv: unsafe extern "C" fn(c_int, *const libc::iovec, c_int, off64_t) -> ssize_t;
    preadv64: unsafe extern "C" fn(c_int, *const libc::iovec, c_int, off64_t) -> ssize_t;
    pwritev: unsafe extern "C" fn(c_int, *const libc::iovec, c_int, off64_t) -> ssize_t;
    pwritev64: unsafe extern "C" fn(c_int, *const libc::iovec, c_int, off64_t) -> ssize_t;
    preadv2: unsafe extern "C" fn(c_int, *const libc::iovec, c_int, off64_t, c_int) -> ssize_t;
    pwritev2: unsafe extern "C" fn(c_int, *const libc::iovec, c_int, off64_t, c_int) -> ssize_t;
    preadv64v2: unsafe extern "C" fn(c_int, *const libc::iovec, c_int, off64_t, c_int) -> ssize_t;
    pwritev64v2: unsafe extern "C" fn(c_int, *const libc::iovec, c_int, off64_t, c_int) -> ssize_t;
    lseek: unsafe extern "C" fn(c_int, off64_t, c_int) -> off64_t;
    lseek64: unsafe extern "C" fn(c_int, off64_t, c_int) -> off64_t;
    stat: unsafe extern "C" fn(*const c_char, *mut Stat) -> c_int;
    stat64: unsafe extern "C" fn(*const c_char, *mut Stat) -> c_int;
    lstat: unsafe extern "C" fn(*const c_char, *mut Stat) -> c_int;
    lstat64: unsafe extern "C" fn(*const c_char, *mut Stat) -> c_int;
    fstat: unsafe extern "C" fn(c_int, *mut Stat) -> c_int;
    fstat64: unsafe extern "C" fn(c_int, *mut Stat) -> c_int;
    fstatat: unsafe extern "C" fn(c_int, *const c_char, *mut Stat, c_int) -> c_int;
    fstatat64: unsafe extern "C" fn(c_int, *const c_char, *mut Stat, c_int) -> c_int;
    __xstat: unsafe extern "C" fn(c_int, *const c_char, *mut Stat) -> c_int;
    __xstat64: unsafe extern "C" fn(c_int, *const c_char, *mut Stat) -> c_int;
    __lxstat: unsafe extern "C" fn(c_int, *const c_char, *mut Stat) -> c_int;
    __lxstat64: unsafe extern "C" fn(c_int, *const c_char, *mut Stat) -> c_int;
    __fxstat: unsafe extern "C" fn(c_int, c_int, *mut Stat) -> c_int;
    __fxstat64: unsafe extern "C" fn(c_int, c_int, *mut Stat) -> c_int;
    __fxstatat: unsafe extern "C" fn(c_int, c_int, *const c_char, *mut Stat, c_int) -> c_int;
    __fxstatat64: unsafe extern "C" fn(c_int, c_int, *const c_char, *mut Stat, c_int) -> c_int;
    statx: unsafe extern "C" fn(c_int, *const c_char, c_int, c_uint, *mut libc::statx) -> c_int;
    statfs: unsafe extern "C" fn(*const c_char, *mut libc::statfs64) -> c_int;
    statfs64: unsafe extern "C" fn(*const c_char, *mut libc::statfs64) -> c_int;
    fstatfs: unsafe extern "C" fn(c_int, *mut libc::statfs64) -> c_int;
    fstatfs64: unsafe extern "C" fn(c_int, *mut libc::statfs64) -> c_int;
    statvfs: unsafe extern "C" fn(*const c_char, *mut libc::statvfs64) -> c_int;
    statvfs64: unsafe extern "C" fn(*const c_char, *mut libc::statvfs64) -> c_int;
    fstatvfs: unsafe extern "C" fn(c_int, *mut libc::statvfs64) -> c_int;
    fstatvfs64: unsafe extern "C" fn(c_int, *mut libc::statvfs64) -> c_int;
    access: unsafe extern "C" fn(*const c_char, c_int) -> c_int;
    faccessat: unsafe extern "C" fn(c_int, *const c_char, c_int, c_int) -> c_int;
    euidaccess: unsafe extern "C" fn(*const c_char, c_int) -> c_int;
    eaccess: unsafe extern "C" fn(*const c_char, c_int) -> c_int;
    truncate: unsafe extern "C" fn(*const c_char, off64_t) -> c_int;
    truncate64: unsafe extern "C" fn(*const c_char, off64_t) -> c_int;
    ftruncate: unsafe extern "C" fn(c_int, off64_t) -> c_int;
    ftruncate64: unsafe extern "C" fn(c_int, off64_t) -> c_int;
    fallocate: unsafe extern "C" fn(c_int, c_int, off64_t, off64_t) -> c_int;
    fallocate64: unsafe extern "C" fn(c_int, c_int, off64_t, off64_t) -> c_int;
    posix_fallocate: unsafe extern "C" fn(c_int, off64_t, off64_t) -> c_int;
    posix_fallocate64: unsafe extern "C" fn(c_int, off64_t, off64_t) -> c_int;
    posix_fadvise: unsafe extern "C" fn(c_int, off64_t, off64_t, c_int) -> c_int;
    posix_fadvise64: unsafe extern "C" fn(c_int, off64_t, off64_t, c_int) -> c_int;
    readahead: unsafe extern "C" fn(c_int, off64_t, size_t) -> ssize_t;
    fsync: unsafe extern "C" fn(c_int) -> c_int;
    fdatasync: unsafe extern "C" fn(c_int) -> c_int;
    syncfs: unsafe extern "C" fn(c_int) -> c_int;
    sync_file_range: unsafe extern "C" fn(c_int, off64_t, off64_t, c_uint) -> c_int;
    sync: unsafe extern "C" fn();
    unlink: unsafe extern "C" fn(*const c_char) -> c_int;
    unlinkat: unsafe extern "C" fn(c_int, *const c_char, c_int) -> c_int;
    remove: unsafe extern "C" fn(*const c_char) -> c_int;
    rename: unsafe extern "C" fn(*const c_char, *const c_char) -> c_int;
    renameat: unsafe extern "C" fn(c_int, *const c_char, c_int, *const c_char) -> c_int;
    renameat2: unsafe extern "C" fn(c_int, *const c_char, c_int, *const c_char, c_uint) -> c_int;
    link: unsafe extern "C" fn(*const c_char, *const c_char) -> c_int;
    linkat: unsafe extern "C" fn(c_int, *const c_char, c_int, *const c_char, c_int) -> c_int;
    symlink: unsafe extern "C" fn(*const c_char, *const c_char) -> c_int;
    symlinkat: unsafe extern "C" fn(*const c_char, c_int, *const c_char) -> c_int;
    readlink: unsafe extern "C" fn(*const c_char, *mut c_char, size_t) -> ssize_t;
    readlinkat: unsafe extern "C" fn(c_int, *const c_char, *mut c_char, size_t) -> ssize_t;
    mkdir: unsafe extern "C" fn(*const c_char, mode_t) -> c_int;
    mkdirat: unsafe extern "C" fn(c_int, *const c_char, mode_t) -> c_int;
    rmdir: unsafe extern "C" fn(*const c_char) -> c_int;
    mknod: unsafe extern "C" fn(*const c_char, mode_t, libc::dev_t) -> c_int;
    mknodat: unsafe extern "C" fn(c_int, *const c_char, mode_t, libc::dev_t) -> c_int;
    mkfifo: unsafe extern "C" fn(*const c_char, mode_t) -> c_int;
    bind: unsafe extern "C" fn(c_int, *const libc::sockaddr, libc::socklen_t) -> c_int;
    connect: unsafe extern "C" fn(c_int, *const libc::sockaddr, libc::socklen_t) -> c_int;
    mkfifoat: unsafe extern "C" fn(c_int, *const c_char, mode_t) -> c_int;
    chmod: unsafe extern "C" fn(*const c_char, mode_t) -> c_int;
    fchmod: unsafe extern "C" fn(c_int, mode_t) -> c_int;
    fchmodat: unsafe extern "C" fn(c_int, *const c_char, mode_t, c_int) -> c_int;
    chown: unsafe extern "C" fn(*const c_char, libc::uid_t, libc::gid_t) -> c_int;
    lchown: unsafe extern "C" fn(*const c_char, libc::uid_t, libc::gid_t) -> c_int;
    fchown: unsafe extern "C" fn(c_int, libc::uid_t, libc::gid_t) -> c_int;
    fchownat: unsafe extern "C" fn(c_int, *const c_char, libc::uid_t, libc::gid_t, c_int) -> c_int;
    utimensat: unsafe extern "C" fn(c_int, *const c_char, *const libc::timespec, c_int) -> c_int;
    futimens: unsafe extern "C" fn(c_int, *const libc::timespec) -> c_int;
    utime: unsafe extern "C" fn(*const c_char, *const libc::utimbuf) -> c_int;
    utimes: unsafe extern "C" fn(*const c_char, *const libc::timeval) -> c_int;
    lutimes: unsafe extern "C" fn(*const c_char, *const libc::timeval) -> c_int;
    futimes: unsafe extern "C" fn(c_int, *const libc::timeval) -> c_int;
    chdir: unsafe extern "C" fn(*const c_char) -> c_int;
    fchdir: unsafe extern "C" fn(c_int) -> c_int;
    getcwd: unsafe extern "C" fn(*mut c_char, size_t) -> *mut c_char;
    realpath: unsafe extern "C" fn(*const c_char, *mut c_char) -> *mut c_char;
    canonicalize_file_name: unsafe extern "C" fn(*const c_char) -> *mut c_char;
    getxattr: unsafe extern "C" fn(*const c_char, *const c_char, *mut c_void, size_t) -> ssize_t;
    lgetxattr: unsafe extern "C" fn(*const c_char, *const c_char, *mut c_void, size_t) -> ssize_t;
    fgetxattr: unsafe extern "C" fn(c_int, *const c_char, *mut c_void, size_t) -> ssize_t;
    setxattr: unsafe extern "C" fn(*const c_char, *const c_char, *const c_void, size_t, c_int) -> c_int;
    lsetxattr: unsafe extern "C" fn(*const c_char, *const c_char, *const c_void, size_t, c_int) -> c_int;
    fsetxattr: unsafe extern "C" fn(c_int, *const c_char, *const c_void, size_t, c_int) -> c_int;
    listxattr: unsafe extern "C" fn(*const c_char, *mut c_char, size_t) -> ssize_t;
    llistxattr: unsafe extern "C" fn(*const c_char, *mut c_char, size_t) -> ssize_t;
    flistxattr: unsafe extern "C" fn(c_int, *mut c_char, size_t) -> ssize_t;
    removexattr: unsafe extern "C" fn(*const c_char, *const c_char) -> c_int;
    lremovexattr: unsafe extern "C" fn(*const c_char, *const c_char) -> c_int;
    fremovexattr: unsafe extern "C" fn(c_int, *const c_char) -> c_int;
    opendir: unsafe extern "C" fn(*const c_char) -> *mut libc::DIR;
    fdopendir: unsafe extern "C" fn(c_int) -> *mut libc::DIR;
    readdir: unsafe extern "C" fn(*mut libc::DIR) -> *mut libc::dirent64;
    readdir64: unsafe extern "C" fn(*mut libc::DIR) -> *mut libc::dirent64;
    closedir: unsafe extern "C" fn(*mut libc::DIR) -> c_int;
    readdir_r: unsafe extern "C" fn(*mut libc::DIR, *mut libc::dirent64, *mut *mut libc::dirent64) -> c_int;
    readdir64_r: unsafe extern "C" fn(*mut libc::DIR, *mut libc::dirent64, *mut *mut libc::dirent64) -> c_int;
    dirfd: unsafe extern "C" fn(*mut libc::DIR) -> c_int;
    rewinddir: unsafe extern "C" fn(*mut libc::DIR);
    telldir: unsafe extern "C" fn(*mut libc::DIR) -> libc::c_long;
    seekdir: unsafe extern "C" fn(*mut libc::DIR, libc::c_long);
    getdents64: unsafe extern "C" fn(c_int, *mut c_void, size_t) -> ssize_t;
    fcntl: unsafe extern "C" fn(c_int, c_int, ...) -> c_int;
    fork: unsafe extern "C" fn() -> libc::pid_t;
    execve: unsafe extern "C" fn(*const c_char, *const *const c_char, *const *const c_char) -> c_int;
    execvpe: unsafe extern "C" fn(*const c_char, *const *const c_char, *const *const c_char) -> c_int;
    fexecve: unsafe extern "C" fn(c_int, *const *const c_char, *const *const c_char) -> c_int;
    posix_spawn: unsafe extern "C" fn(*mut libc::pid_t, *const c_char, *const libc::posix_spawn_file_actions_t, *const libc::posix_spawnattr_t, *const *mut c_char, *const *mut c_char) -> c_int;
    posix_spawnp: unsafe extern "C" fn(*mut libc::pid_t, *const c_char, *const libc::posix_spawn_file_actions_t, *const libc::posix_spawnattr_t, *const *mut c_char, *const *mut c_char) -> c_int;
    system: unsafe extern "C" fn(*const c_char) -> c_int;
    popen: unsafe extern "C" fn(*const c_char, *const c_char) -> *mut libc::FILE;
    pclose: unsafe extern "C" fn(*mut libc::FILE) -> c_int;
    fcntl64: unsafe extern "C" fn(c_int, c_int, ...) -> c_int;
    ioctl: unsafe extern "C" fn(c_int, c_ulong, ...) -> c_int;
    flock: unsafe extern "C" fn(c_int, c_int) -> c_int;
    lockf: unsafe extern "C" fn(c_int, c_int, off64_t) -> c_int;
    lockf64: unsafe extern "C" fn(c_int, c_int, off64_t) -> c_int;
    dup: unsafe extern "C" fn(c_int) -> c_int;
    dup2: unsafe extern "C" fn(c_int, c_int) -> c_int;
    dup3: unsafe extern "C" fn(c_int, c_int, c_int) -> c_int;
    fopen: unsafe extern "C" fn(*const c_char, *const c_char) -> *mut libc::FILE;
    fopen64: unsafe extern "C" fn(*const c_char, *const c_char) -> *mut libc::FILE;
    fdopen: unsafe extern "C" fn(c_int, *const c_char) -> *mut libc::FILE;
    fclose: unsafe extern "C" fn(*mut libc::FILE) -> c_int;
    fileno: unsafe extern "C" fn(*mut libc::FILE) -> c_int;
    fileno_unlocked: unsafe extern "C" fn(*mut libc::FILE) -> c_int;
    freopen: unsafe extern "C" fn(*const c_char, *const c_char, *mut libc::FILE) -> *mut libc::FILE;
    freopen64: unsafe extern "C" fn(*const c_char, *const c_char, *mut libc::FILE) -> *mut libc::FILE;
    mmap: unsafe extern "C" fn(*mut c_void, size_t, c_int, c_int, c_int, off64_t) -> *mut c_void;
    mmap64: unsafe extern "C" fn(*mut c_void, size_t, c_int, c_int, c_int, off64_t) -> *mut c_void;
    munmap: unsafe extern "C" fn(*mut c_void, size_t) -> c_int;
    msync: unsafe extern "C" fn(*mut c_void, size_t, c_int) -> c_int;
    mprotect: unsafe extern "C" fn(*mut c_void, size_t, c_int) -> c_int;
    madvise: unsafe extern "C" fn(*mut c_void, size_t, c_int) -> c_int;
    posix_madvise: unsafe extern "C" fn(*mut c_void, size_t, c_int) -> c_int;
    mremap: unsafe extern "C" fn(*mut c_void, size_t, size_t, c_int, ...) -> *mut c_void;
    copy_file_range: unsafe extern "C" fn(c_int, *mut off64_t, c_int, *mut off64_t, size_t, c_uint) -> ssize_t;
    sendfile: unsafe extern "C" fn(c_int, c_int, *mut off64_t, size_t) -> ssize_t;
    sendfile64: unsafe extern "C" fn(c_int, c_int, *mut off64_t, size_t) -> ssize_t;
    splice: unsafe extern "C" fn(c_int, *mut off64_t, c_int, *mut off64_t, size_t, c_uint) -> ssize_t;
    mkstemp: unsafe extern "C" fn(*mut c_char) -> c_int;
    mkstemp64: unsafe extern "C" fn(*mut c_char) -> c_int;
    mkostemp: unsafe extern "C" fn(*mut c_char, c_int) -> c_int;
    mkostemp64: unsafe extern "C" fn(*mut c_char, c_int) -> c_int;
    mkstemps: unsafe extern "C" fn(*mut c_char, c_int) -> c_int;
    mkstemps64: unsafe extern "C" fn(*mut c_char, c_int) -> c_int;
    mkostemps: unsafe extern "C" fn(*mut c_char, c_int, c_int) -> c_int;
    mkostemps64: unsafe extern "C" fn(*mut c_char, c_int, c_int) -> c_int;
    mkdtemp: unsafe extern "C" fn(*mut c_char) -> *mut c_char;
    pathconf: unsafe extern "C" fn(*const c_char, c_int) -> libc::c_long;
    fpathconf: unsafe extern "C" fn(c_int, c_int) -> libc::c_long;
    inotify_add_watch: unsafe extern "C" fn(c_int, *const c_char, u32) -> c_int;
    scandir: unsafe extern "C" fn(
        *const c_char,
        *mut *mut *mut libc::dirent64,
        Option<unsafe extern "C" fn(*const libc::dirent64) -> c_int>,
        Option<unsafe extern "C" fn(*mut *const libc::dirent64, *mut *const libc::dirent64) -> c_int>,
    ) -> c_int;
    scandir64: unsafe extern "C" fn(
        *const c_char,
        *mut *mut *mut libc::dirent64,
        Option<unsafe extern "C" fn(*const libc::dirent64) -> c_int>,
        Option<unsafe extern "C" fn(*mut *const libc::dirent64, *mut *const libc::dirent64) -> c_int>,
    ) -> c_int;
    tee: unsafe extern "C" fn(c_int, c_int, size_t, c_uint) -> ssize_t;
    sigaction: unsafe extern "C" fn(c_int, *const libc::sigaction, *mut libc::sigaction) -> c_int;
    signal: unsafe extern "C" fn(c_int, libc::sighandler_t) -> libc::sighandler_t;
    pthread_create: unsafe extern "C" fn(
        *mut libc::pthread_t,
        *const libc::pthread_attr_t,
        extern "C" fn(*mut c_void) -> *mut c_void,
        *mut c_void,
    ) -> c_int;
    thrd_create: unsafe extern "C" fn(*mut c_ulong, extern "C" fn(*mut c_void) -> c_int, *mut c_void) -> c_int;
    timer_create: unsafe extern "C" fn(libc::clockid_t, *mut libc::sigevent, *mut libc::timer_t) -> c_int;
    mq_notify: unsafe extern "C" fn(libc::mqd_t, *const libc::sigevent) -> c_int;
    aio_read: unsafe extern "C" fn(*mut libc::aiocb) -> c_int;
    aio_read64: unsafe extern "C" fn(*mut libc::aiocb) -> c_int;
    aio_write: unsafe extern "C" fn(*mut libc::aiocb) -> c_int;
    aio_write64: unsafe extern "C" fn(*mut libc::aiocb) -> c_int;
    aio_fsync: unsafe extern "C" fn(c_int, *mut libc::aiocb) -> c_int;
    aio_fsync64: unsafe extern "C" fn(c_int, *mut libc::aiocb) -> c_int;
    lio_listio: unsafe extern "C" fn(c_int, *const *mut libc::aiocb, c_int, *mut libc::sigevent) -> c_int;
    lio_listio64: unsafe extern "C" fn(c_int, *const *mut libc::aiocb, c_int, *mut libc::sigevent) -> c_int;
    getaddrinfo_a: unsafe extern "C" fn(c_int, *mut *mut c_void, c_int, *mut libc::sigevent) -> c_int;
    __fsetlocking: unsafe extern "C" fn(*mut libc::FILE, c_int) -> c_int;
}
