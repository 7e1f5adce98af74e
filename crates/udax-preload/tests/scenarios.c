/* Kernel DAX test scenarios (after xfstests generic/413, 428, 437, 438, 503,
 * 647), re-created as plain POSIX programs and run on udax through the shim.
 * Each prints "name=ok" or "name=FAIL <why>".  Usage: scenarios MOUNT */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#define PG 4096
static const char *M;
static char path_buf[4096];
static const char *at(const char *n) {
    snprintf(path_buf, sizeof path_buf, "%s/%s", M, n);
    return path_buf;
}
#define FAIL(name, ...)                                                        \
    do {                                                                       \
        printf("%s=FAIL ", name);                                              \
        printf(__VA_ARGS__);                                                   \
        printf(" (errno %d)\n", errno);                                        \
        return;                                                                \
    } while (0)

/* generic/428: a read fault maps a zero page for a hole; a later write(2) to
 * that offset must be seen through every mapping (no stale zero page). */
static void g428(void) {
    int fd = open(at("g428"), O_CREAT | O_RDWR | O_TRUNC, 0644);
    ftruncate(fd, 4 * PG);
    char *a = mmap(NULL, 4 * PG, PROT_READ, MAP_SHARED, fd, 0);
    char *b = mmap(NULL, 4 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (a == MAP_FAILED || b == MAP_FAILED)
        FAIL("g428", "mmap");
    if (a[PG] != 0 || b[PG] != 0)
        FAIL("g428", "hole not zero");
    if (pwrite(fd, "fresh", 5, PG) != 5)
        FAIL("g428", "pwrite");
    if (memcmp(a + PG, "fresh", 5) || memcmp(b + PG, "fresh", 5))
        FAIL("g428", "stale zero page after write");
    b[2 * PG] = 'S'; /* a store into another hole: seen by the other mapping and read(2) */
    char c = 0;
    pread(fd, &c, 1, 2 * PG);
    if (a[2 * PG] != 'S' || c != 'S')
        FAIL("g428", "store not seen");
    munmap(a, 4 * PG);
    munmap(b, 4 * PG);
    close(fd);
    printf("g428=ok\n");
}

/* generic/647 (mmap-rw-fault): read(2)/write(2) whose buffer is an unfaulted
 * mapping of the same file. */
static void g647(void) {
    int fd = open(at("g647"), O_CREAT | O_RDWR | O_TRUNC, 0644);
    char pat[PG];
    for (int i = 0; i < PG; i++)
        pat[i] = (char)(i * 7 + 1);
    pwrite(fd, pat, PG, 0);
    ftruncate(fd, 8 * PG);
    char *p = mmap(NULL, 8 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED)
        FAIL("g647", "mmap");
    /* write from a mapped (not yet faulted) data page into a hole of the same file */
    if (pwrite(fd, p, PG, 4 * PG) != PG)
        FAIL("g647", "pwrite from own mapping");
    /* read into a mapped hole page of the same file (allocates it) */
    if (pread(fd, p + 6 * PG, PG, 0) != PG)
        FAIL("g647", "pread into own mapping");
    char back[PG];
    pread(fd, back, PG, 4 * PG);
    if (memcmp(back, pat, PG))
        FAIL("g647", "data written from the mapping differs");
    pread(fd, back, PG, 6 * PG);
    if (memcmp(back, pat, PG) || memcmp(p + 4 * PG, pat, PG))
        FAIL("g647", "data read into the mapping differs");
    munmap(p, 8 * PG);
    close(fd);
    printf("g647=ok\n");
}

/* generic/413: O_DIRECT read/write between a file and a DAX mapping of another. */
static void g413(void) {
    int src = open(at("g413.src"), O_CREAT | O_RDWR | O_TRUNC, 0644);
    int dst = open(at("g413.dst"), O_CREAT | O_RDWR | O_TRUNC | O_DIRECT, 0644);
    if (src < 0 || dst < 0)
        FAIL("g413", "open O_DIRECT");
    char pat[2 * PG];
    for (int i = 0; i < 2 * PG; i++)
        pat[i] = (char)(i ^ 0x5a);
    pwrite(src, pat, 2 * PG, 0);
    char *m = mmap(NULL, 2 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, src, 0);
    if (m == MAP_FAILED)
        FAIL("g413", "mmap");
    if (pwrite(dst, m, 2 * PG, 0) != 2 * PG)
        FAIL("g413", "O_DIRECT write from a mapping");
    memset(m, 0, 2 * PG);
    if (pread(dst, m, 2 * PG, 0) != 2 * PG)
        FAIL("g413", "O_DIRECT read into a mapping");
    char back[2 * PG];
    pread(src, back, 2 * PG, 0);
    if (memcmp(back, pat, 2 * PG))
        FAIL("g413", "round trip differs");
    munmap(m, 2 * PG);
    close(src);
    close(dst);
    printf("g413=ok\n");
}

/* generic/437 (CoW on a private mapping): the first store to a private page
 * copies it; later writes to the file do not reach the copy, pages not stored
 * to still show the file; the file never sees the private store. */
static void g437(void) {
    int fd = open(at("g437"), O_CREAT | O_RDWR | O_TRUNC, 0644);
    char buf[2 * PG];
    memset(buf, 'f', sizeof buf);
    pwrite(fd, buf, 2 * PG, 0);
    char *p = mmap(NULL, 2 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED)
        FAIL("g437", "mmap");
    if (p[0] != 'f')
        FAIL("g437", "private mapping does not show the file");
    p[0] = 'P';
    pwrite(fd, "N", 1, 0);
    pwrite(fd, "N", 1, PG);
    char c;
    pread(fd, &c, 1, 0);
    if (c != 'N' || p[0] != 'P')
        FAIL("g437", "private copy not private (file %c, map %c)", c, p[0]);
    if (p[PG] != 'N')
        FAIL("g437", "unstored private page does not show the file");
    munmap(p, 2 * PG);
    close(fd);
    printf("g437=ok\n");
}

/* generic/462: read(2) into a read-only DAX mapping fails with EFAULT (the
 * kernel cannot write there), and leaves the mapped file unchanged. */
static void g462(void) {
    int fd = open(at("g462"), O_CREAT | O_RDWR | O_TRUNC, 0644);
    int src = open(at("g462.src"), O_CREAT | O_RDWR | O_TRUNC, 0644);
    char b[PG];
    memset(b, 'o', PG);
    pwrite(fd, b, PG, 0);
    memset(b, 'n', PG);
    pwrite(src, b, PG, 0);
    char *ro = mmap(NULL, PG, PROT_READ, MAP_SHARED, fd, 0);
    if (ro == MAP_FAILED)
        FAIL("g462", "mmap");
    errno = 0;
    if (pread(src, ro, PG, 0) != -1 || errno != EFAULT)
        FAIL("g462", "pread into a read-only mapping did not fail with EFAULT");
    struct iovec v = {ro, PG};
    errno = 0;
    if (preadv(src, &v, 1, 0) != -1 || errno != EFAULT)
        FAIL("g462", "preadv into a read-only mapping did not fail with EFAULT");
    if (ro[0] != 'o')
        FAIL("g462", "the read-only mapping changed");
    char *rw = mmap(NULL, PG, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (pread(src, rw, PG, 0) != PG || ro[0] != 'n')
        FAIL("g462", "pread into a writable mapping of the same file");
    munmap(ro, PG);
    munmap(rw, PG);
    close(fd);
    close(src);
    printf("g462=ok\n");
}

/* generic/438 and 503: faults and I/O racing with fallocate (punch, zero,
 * collapse) and truncate; nothing may fail that the kernel would not fail. */
static volatile int stop;
static int rfd;
static char *rmap;
static int racefail;
#define RSZ (64 * PG)

static void *io_thread(void *arg) {
    (void)arg;
    char buf[PG];
    unsigned n = 0;
    while (!stop) {
        off_t off = (off_t)((n * 13) % 64) * PG;
        memset(buf, (int)(n & 0xff), PG);
        if (pwrite(rfd, buf, PG, off) != PG)
            racefail = 1;
        ssize_t r = pread(rfd, rmap + ((n * 7) % 32) * PG, PG, off);
        if (r < 0)
            racefail = 2;
        volatile char x = rmap[((n * 5) % 16) * PG]; /* read faults below EOF */
        (void)x;
        n++;
    }
    return NULL;
}

static void race(void) {
    rfd = open(at("race"), O_CREAT | O_RDWR | O_TRUNC, 0644);
    ftruncate(rfd, RSZ);
    char *m = mmap(NULL, RSZ, PROT_READ | PROT_WRITE, MAP_SHARED, rfd, 0);
    /* the I/O thread's buffers: a mapping of another file, so truncating the
     * raced file never cuts them */
    int bfd = open(at("race.buf"), O_CREAT | O_RDWR | O_TRUNC, 0644);
    ftruncate(bfd, 32 * PG);
    rmap = mmap(NULL, 32 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, bfd, 0);
    if (m == MAP_FAILED || rmap == MAP_FAILED) {
        printf("g503=FAIL mmap\n");
        return;
    }
    pthread_t t;
    pthread_create(&t, NULL, io_thread, NULL);
    int bad = 0;
    for (int i = 0; i < 300; i++) {
        off_t o = (off_t)(i % 8) * 2 * PG;
        if (fallocate(rfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, o, 2 * PG) != 0)
            bad = 1;
        if (fallocate(rfd, FALLOC_FL_ZERO_RANGE, o + PG, PG) != 0)
            bad = 2;
        if (i % 10 == 0) {
            if (ftruncate(rfd, 16 * PG) != 0 || ftruncate(rfd, RSZ) != 0)
                bad = 3;
            struct stat st;
            fstat(rfd, &st);
            if (st.st_size >= 4 * PG && fallocate(rfd, FALLOC_FL_COLLAPSE_RANGE, 2 * PG, 2 * PG) != 0)
                bad = 4;
            ftruncate(rfd, RSZ);
        }
        m[(i % 16) * PG] = 'm'; /* store faults below the shortest EOF */
    }
    stop = 1;
    pthread_join(t, NULL);
    if (bad || racefail)
        printf("g503=FAIL fallocate/truncate %d io %d (errno %d)\n", bad, racefail, errno);
    else
        printf("g503=ok\n");
    munmap(m, RSZ);
    munmap(rmap, 32 * PG);
    close(rfd);
    close(bfd);
}

int main(int argc, char **argv) {
    if (argc != 2)
        return 2;
    M = argv[1];
    setvbuf(stdout, NULL, _IOLBF, 0);
    g428();
    g647();
    g413();
    g437();
    g462();
    race();
    return 0;
}
