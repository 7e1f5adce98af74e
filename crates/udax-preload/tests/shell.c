/* system(3) and popen(3) under the shim: the shell they run inherits the
 * udax working directory and descriptors (argv[1]: a directory on udax). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>
#include <sys/wait.h>

int main(int argc, char **argv) {
    if (argc != 2 || chdir(argv[1]) != 0) {
        perror("chdir");
        return 1;
    }
    int fd = open("out", O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || dup2(fd, 7) != 7) {
        perror("open");
        return 1;
    }
    close(fd);
    if (write(7, "parent\n", 7) != 7)
        return 1;
    int st = system("echo from-system >&7; pwd; ls");
    printf("system %d\n", WEXITSTATUS(st));
    fflush(stdout);
    FILE *w = popen("echo from-popen >&7; cat > piped", "w");
    if (!w) {
        perror("popen w");
        return 1;
    }
    fputs("through the pipe\n", w);
    printf("pclose %d\n", pclose(w));
    FILE *r = popen("cat piped out", "re");
    if (!r) {
        perror("popen r");
        return 1;
    }
    char buf[256];
    while (fgets(buf, sizeof buf, r))
        fputs(buf, stdout);
    printf("pclose %d\n", pclose(r));
    printf("exit %d\n", WEXITSTATUS(system("exit 3")));
    printf("missing %d\n", WEXITSTATUS(system("/nonexistent/x 2>/dev/null")));
    return 0;
}
