/* ndctl's dax-pmd and dax-poison protocols, re-created (written here, not
 * copied) for a udax file reached through the shim.
 * argv: udax file (8 MiB, written), host directory (for an O_DIRECT file).
 * Prints key=value lines; the Rust test checks them. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define HP (2UL << 20)
#ifndef MADV_SOFT_OFFLINE
#define MADV_SOFT_OFFLINE 101
#endif
#ifndef MAP_SYNC
#define MAP_SYNC 0x80000
#endif
#ifndef MAP_SHARED_VALIDATE
#define MAP_SHARED_VALIDATE 0x03
#endif

static sigjmp_buf jb;
static volatile int got_code, got_lsb;
static volatile void *got_addr;

static void on_bus(int sig, siginfo_t *si, void *ctx) {
    (void)sig; (void)ctx;
    got_code = si->si_code;
    got_addr = si->si_addr;
    got_lsb = si->si_addr_lsb;
    siglongjmp(jb, 1);
}

static void plain_bus(int sig) { (void)sig; _exit(3); }

/* KernelPageSize (kB) of the mapping holding `p`, from /proc/self/smaps. */
static long page_kb(void *p) {
    FILE *f = fopen("/proc/self/smaps", "r");
    char line[512];
    int in = 0;
    long kb = -1;
    while (f && fgets(line, sizeof line, f)) {
        unsigned long a, b;
        if (sscanf(line, "%lx-%lx ", &a, &b) == 2 && strchr(line, '-') == line + strspn(line, "0123456789abcdef"))
            in = (unsigned long)p >= a && (unsigned long)p < b;
        else if (in && sscanf(line, "KernelPageSize: %ld kB", &kb) == 1)
            break;
    }
    if (f) fclose(f);
    return kb;
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    setvbuf(stdout, NULL, _IONBF, 0);
    int fd = open(argv[1], O_RDWR);
    if (fd < 0) { perror(argv[1]); return 2; }

    /* A 2 MiB-aligned extent of more than 4 MiB, found with FIEMAP. */
    struct fiemap *fm = calloc(1, sizeof *fm + 8 * sizeof(struct fiemap_extent));
    fm->fm_length = ~0ULL;
    fm->fm_extent_count = 8;
    int r = ioctl(fd, FS_IOC_FIEMAP, fm);
    printf("fiemap=%d\n", r);
    off_t off = -1;
    for (unsigned i = 0; r == 0 && i < fm->fm_mapped_extents; i++) {
        struct fiemap_extent *e = &fm->fm_extents[i];
        unsigned long skip = (HP - e->fe_physical % HP) % HP;
        if (e->fe_length >= skip + 2 * HP && (e->fe_logical + skip) % HP == 0) {
            off = e->fe_logical + skip;
            break;
        }
    }
    printf("huge_extent=%s\n", off >= 0 ? "found" : "none");
    if (off < 0) return 1;

    /* mremap of part of a DAX mapping onto anonymous memory: either refused
     * or done, and the anonymous memory keeps working. */
    char *anon = mmap(NULL, 4 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    char *addr = mmap(NULL, 2 * HP, PROT_READ | PROT_WRITE, MAP_SHARED, fd, off);
    printf("mmap_aligned=%s\n", addr != MAP_FAILED && (unsigned long)addr % HP == 0 ? "yes" : "no");
    memset(addr, 'i', 2 * HP);
    printf("page_kb=%ld\n", page_kb(addr + 4096));
    void *m = mremap(addr, 4096, 4096, MREMAP_MAYMOVE | MREMAP_FIXED, anon);
    printf("mremap=%s\n", m == MAP_FAILED ? "refused" : m == anon ? "moved" : "wrong");
    *(volatile int *)anon = 0xAA;
    printf("anon_after_mremap=%s\n", *(volatile int *)anon == 0xAA ? "ok" : "bad");
    munmap(addr, 2 * HP);

    /* Direct I/O with the buffer in the DAX mapping, fork, ro -> rw. */
    char *buf;
    if (posix_memalign((void **)&buf, 4096, 4096)) return 2;
    char path[4096];
    snprintf(path, sizeof path, "%s/odirect", argv[2]);
    for (int i = 0; i < 5; i++) {
        char *a = mmap(NULL, 2 * HP, PROT_READ | PROT_WRITE, MAP_SHARED, fd, off);
        int f2 = open(path, O_CREAT | O_TRUNC | O_DIRECT | O_RDWR, 0600);
        int ok = a != MAP_FAILED && f2 >= 0;
        switch (i) {
        case 0: /* O_DIRECT write from an unfaulted page, read into a faulted one */
            ok = ok && write(f2, a + HP, 4096) == 4096 && pread(f2, a + HP, 4096, 0) == 4096;
            break;
        case 1: /* O_DIRECT from a prefaulted page */
            sprintf(a, "odirect data");
            buf[0] = 0;
            ok = ok && pwrite(f2, a, 4096, 0) == 4096 && pread(f2, buf, 4096, 0) == 4096 &&
                 strcmp(buf, "odirect data") == 0;
            break;
        case 2: { /* fork with the 2 MiB page mapped: the child sees the data */
            sprintf(a, "fork data");
            pid_t c = fork();
            if (c == 0) _exit(strcmp(a, "fork data") == 0 ? 0 : 1);
            int st = 1;
            ok = ok && c > 0 && waitpid(c, &st, 0) == c && WIFEXITED(st) && WEXITSTATUS(st) == 0;
            break;
        }
        case 3: { /* a read fault, then a store to the same page */
            int v = *(volatile int *)a;
            *(volatile int *)a = v + 1;
            ok = ok && *(volatile int *)a == v + 1;
            break;
        }
        case 4: /* O_DIRECT read into an unfaulted page */
            memset(buf, 0, 4096);
            strcpy(buf, "O_DIRECT write of unfaulted address");
            ok = ok && pwrite(f2, buf, 4096, 0) == 4096 && pread(f2, a + HP + 8192, 4096, 0) == 4096 &&
                 strcmp(a + HP + 8192, buf) == 0;
            break;
        }
        printf("directio_%d=%s\n", i, ok ? "ok" : "fail");
        munmap(a, 2 * HP);
        close(f2);
        unlink(path);
    }

    /* dax-poison: MAP_SYNC mapping; SOFT_OFFLINE refused; HWPOISON gives
     * SIGBUS BUS_MCEERR_AR at once; punch + rewrite clears it. The SIGBUS
     * handler is installed after the mapping exists (the shim keeps udax's
     * handler in front). */
    memset(buf, 'p', 4096);
    pwrite(fd, buf, 4096, off + HP / 2);
    fsync(fd);
    char *p = mmap(NULL, 2 * HP, PROT_READ | PROT_WRITE, MAP_SHARED_VALIDATE | MAP_POPULATE | MAP_SYNC, fd, off);
    printf("mmap_sync=%s\n", p == MAP_FAILED ? "failed" : "ok");
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_bus;
    sa.sa_flags = SA_SIGINFO;
    sigaction(SIGBUS, &sa, NULL);
    struct sigaction now;
    sigaction(SIGBUS, NULL, &now);
    printf("sigaction_reports_own=%s\n", now.sa_sigaction == on_bus ? "yes" : "no");
    errno = 0;
    r = madvise(p + HP / 2, 4096, MADV_SOFT_OFFLINE);
    printf("soft_offline=%s\n", r == 0 ? "accepted" : "refused");
    if (sigsetjmp(jb, 1) == 0) {
        r = madvise(p + HP / 2, 4096, MADV_HWPOISON);
        printf("hwpoison_no_signal=%d\n", r);
    } else {
        printf("hwpoison_sigbus=%s\n", got_code == BUS_MCEERR_AR ? "BUS_MCEERR_AR" : "other");
        printf("hwpoison_addr=%s\n", got_addr == p + HP / 2 ? "exact" : "wrong");
        printf("hwpoison_lsb=%d\n", got_lsb);
    }
    /* A later access to the page: SIGBUS again; the neighbour is readable. */
    got_code = 0;
    if (sigsetjmp(jb, 1) == 0) {
        volatile char c = p[HP / 2 + 5];
        (void)c;
        printf("access_after=no_signal\n");
    } else {
        printf("access_after=%s\n", got_code == BUS_MCEERR_AR ? "BUS_MCEERR_AR" : "other");
    }
    /* The next page: readable, or lost with it where the 2 MiB page is the
     * unit of loss (hugetlbfs). */
    got_code = 0;
    if (sigsetjmp(jb, 1) == 0)
        printf("neighbour=%s\n", p[HP / 2 + 4096] == 'i' ? "ok" : "bad");
    else
        printf("neighbour=%s,%d\n", got_code == BUS_MCEERR_AR ? "BUS_MCEERR_AR" : "other", got_lsb);
    char rb[16];
    r = pread(fd, rb, 16, off + HP / 2);
    printf("pread_poisoned=%s\n", r < 0 && errno == EIO ? "EIO" : "other");
    /* Clear: punch the block, write it again, then the page faults back in. */
    r = fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off + HP / 2, 4096);
    memset(buf, 'n', 4096);
    r = r == 0 && pwrite(fd, buf, 4096, off + HP / 2) == 4096 && fsync(fd) == 0;
    printf("clear=%s\n", r ? "ok" : "fail");
    memset(rb, 0, sizeof rb);
    printf("pread_after_clear=%s\n", pread(fd, rb, 16, off + HP / 2) == 16 && rb[3] == 'n' ? "new_data" : "bad");
    got_code = 0;
    if (sigsetjmp(jb, 1) == 0)
        printf("after_clear=%s\n", p[HP / 2 + 7] == 'n' ? "new_data" : "stale");
    else
        printf("after_clear=sigbus\n");
    /* signal(2) for SIGBUS goes through the same path: the old disposition
     * reported is the program's, and the new one is what sigaction shows. */
    sighandler_t was = signal(SIGBUS, plain_bus);
    sigaction(SIGBUS, NULL, &now);
    printf("signal_reports_own=%s\n",
           (void *)was == (void *)on_bus && now.sa_handler == plain_bus ? "yes" : "no");
    munmap(p, 2 * HP);
    close(fd);
    return 0;
}
