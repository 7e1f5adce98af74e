/* A store through a shared mapping onto blocks two clones share (fsx seeds
 * 4, 5, 9, 10 through the shim): file f's blocks 8..12 become one shared
 * run, its first half shared with file g (FICLONERANGE to g), its second
 * half with f's own blocks 0..2 (FICLONERANGE inside f). Stores to pages
 * 8..12 through a MAP_SHARED mapping must go to copies: g and f's blocks
 * 0..2 keep their bytes.
 * argv: mount prefix. Prints key=value lines. */
#include <fcntl.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#define B 4096

static int openp(const char *dir, const char *name) {
    char p[4096];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    int fd = open(p, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) { perror(p); exit(2); }
    return fd;
}

/* Every byte of block `blk` of `fd` equals `v`, but byte 5 when `at5` >= 0. */
static int block_is(int fd, int blk, int v, int at5) {
    unsigned char buf[B];
    if (pread(fd, buf, B, (off_t)blk * B) != B) return 0;
    for (int i = 0; i < B; i++)
        if (buf[i] != (i == 5 && at5 >= 0 ? at5 : v)) return 0;
    return 1;
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    int f = openp(argv[1], "f"), g = openp(argv[1], "g");
    static unsigned char data[16 * B];
    for (int i = 0; i < 16 * B; i++) data[i] = (unsigned char)(i / B + 1);
    if (pwrite(f, data, sizeof data, 0) != (ssize_t)sizeof data) return 2;
    struct file_clone_range r = { .src_fd = f, .src_offset = 8 * B,
                                  .src_length = 2 * B, .dest_offset = 0 };
    printf("clone_to_g=%d\n", ioctl(g, FICLONERANGE, &r));
    r.src_offset = 10 * B;
    printf("clone_in_f=%d\n", ioctl(f, FICLONERANGE, &r));
    unsigned char *m = mmap(NULL, 16 * B, PROT_READ | PROT_WRITE, MAP_SHARED, f, 0);
    if (m == MAP_FAILED) { perror("mmap"); return 2; }
    for (int p = 8; p < 12; p++) m[p * B + 5] = 0xEE;
    if (msync(m, 16 * B, MS_SYNC) != 0 || munmap(m, 16 * B) != 0) return 2;
    printf("g=%s\n", block_is(g, 0, 9, -1) && block_is(g, 1, 10, -1) ? "unchanged" : "CHANGED");
    printf("f_head=%s\n", block_is(f, 0, 11, -1) && block_is(f, 1, 12, -1) ? "unchanged" : "CHANGED");
    int ok = 1;
    for (int p = 8; p < 12; p++) ok &= block_is(f, p, p + 1, 0xEE);
    printf("f_stored=%s\n", ok ? "yes" : "NO");
    return 0;
}
