/*
 * summary.c - the --summary file: the stats JSON written atomically, on the
 * loop (at exit) or by a forked copy of the server (periodically, SIGHUP).
 *
 * Owns: the temporary-file-then-rename write, the writer process (one at a
 * time; a period whose writer is still busy is skipped and counted).
 * Must never: write through a symbolic link, leave a partial file where
 * readers look, or make the loop wait for a periodic write.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "trackd.h"

/* Writes all of b to a new file next to path, then renames it over path:
 * readers see the old summary or the new one, never a partial one, and a
 * symbolic link at path is replaced, never followed. */
static int write_atomically(const char *path, const td_strbuf *b) {
    char tmp[4096];
    if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path, (int)getpid()) >= sizeof(tmp)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    int flags = O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC;
    int fd = open(tmp, flags, 0644);
    if (fd < 0 && errno == EEXIST && unlink(tmp) == 0) /* left by a crash of this pid's predecessor */
        fd = open(tmp, flags, 0644);
    if (fd < 0)
        return -1;
    (void)fchmod(fd, 0644); /* fixed, whatever the umask */
    size_t off = 0;
    while (off < b->len) {
        ssize_t n = write(fd, b->p + off, b->len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        off += (size_t)n;
    }
    int ok = off == b->len && fsync(fd) == 0;
    if (close(fd) != 0)
        ok = 0;
    if (!ok || rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        errno = e;
        return -1;
    }
    return 0;
}

/* The stats JSON, rendered and written; 0, or -1 with errno set. */
static int render_and_write(td_server *s) {
    td_strbuf b = {0};
    td_render_stats(s, &b, 1, TD_SUMMARY_LIMIT);
    int rc = b.failed || b.p == NULL ? (errno = ENOMEM, -1) : write_atomically(s->summary_path, &b);
    int e = errno;
    free(b.p);
    errno = e;
    return rc;
}

int td_write_summary(td_server *s) {
    int rc = render_and_write(s);
    if (rc != 0)
        td_log(s, TD_ERROR, "cannot write summary to %s: %s", s->summary_path, strerror(errno));
    return rc;
}

void td_summary_reap(td_server *s, int wait) {
    int st;
    if (s->summary_pid <= 0 || waitpid(s->summary_pid, &st, wait ? 0 : WNOHANG) != s->summary_pid)
        return;
    s->summary_pid = 0;
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        td_log(s, TD_ERROR, "cannot write summary to %s: %s", s->summary_path,
               WIFEXITED(st) ? strerror(WEXITSTATUS(st)) : "the writer was killed");
}

void td_summary_start(td_server *s) {
    td_summary_reap(s, 0);
    if (s->summary_pid > 0) { /* the last one is still writing: this one is skipped */
        s->summaries_skipped++;
        return;
    }
    /* A forked copy of the server renders, writes and fsyncs: the loop pays
     * for the fork (page tables), not for 58 MB of JSON and an fsync (with
     * 131,072 groups the owner's stats waited up to 3.7 s in 0.3.1), and the
     * copy sees one consistent moment of the tracker without locks. */
    pid_t parent = getpid(), pid = fork();
    if (pid == 0) {
        /* A server killed outright takes its writer with it: no process of
         * a dead server keeps writing tens of megabytes. */
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent)
            _exit(ECHILD);
        int rc = render_and_write(s);
        _exit(rc == 0 ? 0 : (errno > 0 && errno < 256 ? errno : EIO)); /* no atexit, no stdio flush */
    }
    if (pid < 0) {
        td_log(s, TD_ERROR, "cannot start the summary writer (%s); writing on the loop", strerror(errno));
        (void)td_write_summary(s);
        return;
    }
    s->summary_pid = pid;
}
