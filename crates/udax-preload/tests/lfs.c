/* Built with -D_FILE_OFFSET_BITS=64, as xfstests, stress-ng and Python are:
 * preadv2/pwritev2 are glibc's preadv64v2/pwritev64v2 then. Also statx's
 * DAX attribute. argv[1]: a path (on udax, or on the host to compare). */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>
#ifndef STATX_ATTR_DAX
#define STATX_ATTR_DAX 0x00200000
#endif

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    int fd = open(argv[1], O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) { perror("open"); return 1; }
    char a[] = "hello ", b[] = "world";
    struct iovec w[2] = {{a, 6}, {b, 5}};
    ssize_t n = pwritev2(fd, w, 2, 100, RWF_DSYNC);
    if (n != 11) { perror("pwritev2"); return 1; }
    char r1[6] = {0}, r2[5] = {0};
    struct iovec r[2] = {{r1, 6}, {r2, 5}};
    n = preadv2(fd, r, 2, 100, 0);
    if (n != 11 || memcmp(r1, "hello ", 6) || memcmp(r2, "world", 5)) {
        fprintf(stderr, "preadv2: %zd\n", n);
        return 1;
    }
    n = preadv2(fd, r, 2, -1, 0); /* at the file position (0): a hole */
    if (n != 11 || r1[0] != 0) { fprintf(stderr, "preadv2 at -1: %zd\n", n); return 1; }
    struct statx sx;
    if (statx(AT_FDCWD, argv[1], 0, STATX_BASIC_STATS, &sx)) { perror("statx"); return 1; }
    printf("size=%llu dax=%d dax_in_mask=%d\n", (unsigned long long)sx.stx_size,
           !!(sx.stx_attributes & STATX_ATTR_DAX), !!(sx.stx_attributes_mask & STATX_ATTR_DAX));
    return 0;
}
