/* A panic inside the shim (debug builds panic on opening MOUNT/.udax-test-panic)
 * becomes EIO for that call; the program goes on using udax.
 * Usage: panic MOUNT. Prints "ok" or the first failure. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 2)
        return 2;
    char p[4096], q[4096], back[6] = {0};
    snprintf(p, sizeof p, "%s/.udax-test-panic", argv[1]);
    snprintf(q, sizeof q, "%s/after", argv[1]);
    for (int i = 0; i < 3; i++) {
        errno = 0;
        int fd = open(p, O_CREAT | O_RDWR, 0644);
        if (fd != -1 || errno != EIO) {
            printf("open of the panic path: fd %d errno %d, want -1 EIO\n", fd, errno);
            return 1;
        }
    }
    int fd = open(q, O_CREAT | O_RDWR, 0644);
    if (fd < 0 || write(fd, "after", 5) != 5 || pread(fd, back, 5, 0) != 5 ||
        strcmp(back, "after") != 0) {
        printf("udax after the panic: %s\n", strerror(errno));
        return 1;
    }
    close(fd);
    printf("ok\n");
    return 0;
}
