/*
 * rundir.c - the default location of bh-trackd's socket (see rundir.h).
 *
 * Why a private directory: a socket path in /tmp itself can be squatted by any
 * user (bind it first, or plant a symbolic link), and a client would then
 * hand its allocation events to a stranger. A directory that only we can
 * write into, checked after creation, leaves nobody else a way in.
 * Must never: call into the rest of the library, print, or follow a symbolic
 * link in the final path component it checks.
 */
#include "rundir.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int bh__private_dir_ok(const char *path, unsigned uid) {
    struct stat st;
    /* lstat: a link named like our directory is somebody else's idea. */
    if (lstat(path, &st) != 0)
        return -1;
    if (!S_ISDIR(st.st_mode)) {
        errno = ENOTDIR;
        return -1;
    }
    if (st.st_uid != (uid_t)uid || (st.st_mode & 07777) != 0700) {
        errno = EPERM;
        return -1;
    }
    return 0;
}

/* Copies s into buf; -1 (ENAMETOOLONG) if it does not fit. */
static int copy_path(char *buf, size_t cap, const char *s) {
    size_t n = strlen(s);
    if (n >= cap) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(buf, s, n + 1);
    return 0;
}

int bh__user_dir(const char *parent, char *buf, size_t cap) {
    unsigned uid = (unsigned)geteuid();
    char dir[4096];
    if ((size_t)snprintf(dir, sizeof(dir), "%s/bh-trackd-%u", parent, uid) >= sizeof(dir)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    if (mkdir(dir, 0700) == 0) {
        /* The umask may have taken bits off; the directory is ours, so set
         * them exactly (mkdir never makes it looser than 0700). */
        if (chmod(dir, 0700) != 0)
            return -1;
    } else if (errno != EEXIST) {
        return -1;
    }
    if (bh__private_dir_ok(dir, uid) != 0)
        return -1;
    return copy_path(buf, cap, dir);
}

int bh__default_dir(char *buf, size_t cap) {
    const char *xdg = getenv("XDG_RUNTIME_DIR");
    if (xdg != NULL && xdg[0] == '/' && bh__private_dir_ok(xdg, (unsigned)geteuid()) == 0)
        return copy_path(buf, cap, xdg);
    return bh__user_dir("/tmp", buf, cap);
}

int bh__default_socket_path(char *buf, size_t cap) {
    char dir[4096];
    if (bh__default_dir(dir, sizeof(dir)) != 0)
        return -1;
    size_t n = strlen(dir);
    if (n + 1 + sizeof(BH__SOCKET_NAME) > cap) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(buf, dir, n);
    buf[n] = '/';
    memcpy(buf + n + 1, BH__SOCKET_NAME, sizeof(BH__SOCKET_NAME));
    return 0;
}
