/* execl, execlp and execle under the shim (issue 17): the shell they start
   inherits a udax descriptor (fd 3, not close-on-exec) and the virtual
   working directory. More arguments than the registers hold, so some reach
   the shim on the stack. argv[1]: a udax directory; argv[2]: l, lp or le. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

extern char **environ;

int main(int argc, char **argv) {
    if (argc != 3)
        return 2;
    if (chdir(argv[1]) != 0) {
        perror("chdir");
        return 1;
    }
    int fd = open("out", O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd < 0 || (fd != 3 && dup2(fd, 3) != 3)) {
        perror("open");
        return 1;
    }
    const char *script = "echo \"$0 $1 $2 $3 $4 $5 $6 ${X:-}\" >&3; pwd";
    if (strcmp(argv[2], "l") == 0) {
        execl("/bin/sh", "sh", "-c", script, "a", "b", "c", "d", "e", "f", (char *)0);
    } else if (strcmp(argv[2], "lp") == 0) {
        execlp("sh", "sh", "-c", script, "a", "b", "c", "d", "e", "f", (char *)0);
    } else {
        /* This environment plus X (the shim's variables come along). */
        size_t n = 0;
        while (environ[n])
            n++;
        char **env = calloc(n + 2, sizeof *env);
        if (!env)
            return 1;
        memcpy(env, environ, n * sizeof *env);
        env[n] = "X=from-envp";
        execle("/bin/sh", "sh", "-c", script, "a", "b", "c", "d", "e", "f", (char *)0, env);
    }
    perror("exec");
    return 1;
}
