/* Reflink ioctls on udax files through the shim: FICLONERANGE, FIDEDUPERANGE
 * (one equal and one differing destination), FICLONE from a host file.
 * argv: mount prefix, host dir. Prints key=value lines. */
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

static int openp(const char *dir, const char *name, int flags) {
    char p[4096];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    int fd = open(p, flags, 0644);
    if (fd < 0) { perror(p); exit(2); }
    return fd;
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    const char *m = argv[1], *h = argv[2];
    int src = openp(m, "src", O_RDONLY);
    int dst = openp(m, "dst", O_RDWR | O_CREAT | O_TRUNC);
    struct file_clone_range r = { .src_fd = src, .src_offset = 4096,
                                  .src_length = 8192, .dest_offset = 0 };
    printf("ficlonerange=%d\n", ioctl(dst, FICLONERANGE, &r));
    r.src_offset = 100; /* not block aligned */
    int e = ioctl(dst, FICLONERANGE, &r);
    printf("ficlonerange_unaligned=%d,%s\n", e, e < 0 && errno == EINVAL ? "EINVAL" : "other");
    int host = openp(h, "hostfile", O_RDWR | O_CREAT | O_TRUNC);
    if (write(host, "x", 1) != 1) return 2;
    e = ioctl(dst, FICLONE, host);
    printf("ficlone_from_host=%d,%s\n", e, e < 0 && errno == EXDEV ? "EXDEV" : "other");
    int same = openp(m, "same", O_RDWR);
    int diff = openp(m, "diff", O_RDWR);
    struct file_dedupe_range *d = calloc(1, sizeof *d + 2 * sizeof(struct file_dedupe_range_info));
    d->src_offset = 0;
    d->src_length = 16384;
    d->dest_count = 2;
    d->info[0].dest_fd = same;
    d->info[1].dest_fd = diff;
    printf("fideduperange=%d\n", ioctl(src, FIDEDUPERANGE, d));
    printf("same=%d,%llu\n", d->info[0].status, (unsigned long long)d->info[0].bytes_deduped);
    printf("diff=%d,%llu\n", d->info[1].status, (unsigned long long)d->info[1].bytes_deduped);
    return 0;
}
