/*
 * proc.c - see proc.h. Owns finding, starting and stopping a bh-trackd
 * process for a tool; never used by the library.
 */
#define _POSIX_C_SOURCE 200809L
#include "proc.h"

#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

const char *bh_trackd_next_to_self(void) {
    static char path[4096];
    ssize_t n = readlink("/proc/self/exe", path, sizeof(path) - 32);
    if (n <= 0)
        return NULL;
    path[n] = '\0';
    char *slash = strrchr(path, '/');
    if (slash == NULL)
        return NULL;
    strcpy(slash + 1, "bh-trackd");
    return access(path, X_OK) == 0 ? path : NULL;
}

int bh_unix_connect(const char *path) {
    struct sockaddr_un sa;
    size_t n = strlen(path);
    if (n >= sizeof(sa.sun_path))
        return -1;
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    memcpy(sa.sun_path, path, n + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        close(fd);
        fd = -1;
    }
    return fd;
}

int bh_trackd_reachable(const char *path) {
    int fd = bh_unix_connect(path);
    if (fd < 0)
        return 0;
    close(fd);
    return 1;
}

pid_t bh_trackd_start(const char *trackd, const char *sock, const char *log, const char *grace_ms) {
    pid_t pid = fork();
    if (pid == 0) {
        if (grace_ms != NULL)
            execl(trackd, trackd, "--socket", sock, "--log", log, "--grace-ms", grace_ms, (char *)NULL);
        else
            execl(trackd, trackd, "--socket", sock, "--log", log, (char *)NULL);
        _exit(127);
    }
    for (int i = 0; pid > 0 && i < 500; i++) {
        if (bh_trackd_reachable(sock))
            return pid;
        nanosleep(&(struct timespec){0, 10000000}, NULL);
    }
    if (pid > 0) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
    }
    return -1;
}

void bh_trackd_stop(pid_t pid) {
    if (pid <= 0)
        return;
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
}
