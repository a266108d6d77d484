/*
 * log.c - bh-trackd's log stream.
 *
 * Owns: opening the --log file (no symbolic links, no FIFOs: a regular file,
 * created with a fixed mode, or a character device such as /dev/null), reopening it on SIGHUP, and every log
 * line: "TIMESTAMP LEVEL message", rate-limited per message (its format string) so that no peer can make the
 * log grow faster than TD_LOG_BURST lines per kind per window. Must never: write to stdout (query commands
 * own it), block on anything but the log file itself, or open a file in a way that could truncate it.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "trackd.h"

uint64_t td_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

FILE *td_open_log(const char *path) {
    /* O_NONBLOCK: a FIFO planted at path must not hang the open; O_EXCL
     * first, so that only a file we create gets our mode. */
    int flags = O_WRONLY | O_APPEND | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK;
    int fd = open(path, flags | O_CREAT | O_EXCL, 0600);
    if (fd >= 0)
        (void)fchmod(fd, 0600); /* the umask may have taken bits off; never adds any */
    else if (errno == EEXIST)
        fd = open(path, flags);
    if (fd < 0)
        return NULL;
    struct stat st;
    if (fstat(fd, &st) != 0 || !(S_ISREG(st.st_mode) || S_ISCHR(st.st_mode))) { /* a file, or /dev/null */
        close(fd);
        errno = EINVAL;
        return NULL;
    }
    (void)fcntl(fd, F_SETFL, O_WRONLY | O_APPEND); /* regular file: blocking writes are fine */
    FILE *f = fdopen(fd, "a");
    if (f == NULL)
        close(fd);
    return f;
}

static const char *level_name(int level) {
    return level == TD_ERROR ? "ERROR" : level == TD_WARN ? "WARN" : "INFO";
}

static void vline(td_server *s, int level, const char *fmt, va_list ap) TD_PRINTF(3, 0);
static void vline(td_server *s, int level, const char *fmt, va_list ap) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char when[32];
    strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
    fprintf(s->log, "%s.%03dZ %s bh-trackd: ", when, (int)(ts.tv_nsec / 1000000), level_name(level));
    vfprintf(s->log, fmt, ap);
    fputc('\n', s->log);
    fflush(s->log);
}

static void line(td_server *s, int level, const char *fmt, ...) TD_PRINTF(3, 4);
static void line(td_server *s, int level, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vline(s, level, fmt, ap);
    va_end(ap);
}

/* The rate-limit slot of a message; the table is small, so a full one shares
 * slots by hash (messages sharing a slot share a budget: still bounded). */
static td_rate *rate_of(td_server *s, const char *fmt) {
    size_t h = ((size_t)(uintptr_t)fmt >> 3) % TD_LOG_KINDS;
    for (size_t i = 0; i < TD_LOG_KINDS; i++) {
        td_rate *r = &s->rates[(h + i) % TD_LOG_KINDS];
        if (r->fmt == fmt || r->fmt == NULL) {
            r->fmt = fmt;
            return r;
        }
    }
    return &s->rates[h];
}

/* A window that ended: says how many lines it held back (with the first of
 * them as it would have read: the format string itself, "pid %d %s", told
 * the reader nothing), starts a new one. */
static void roll_window(td_server *s, td_rate *r, uint64_t now) {
    if (r->suppressed > 0)
        line(s, TD_WARN, "%" PRIu64 " more lines like \"%s\" were not logged (limit %d per %u s)",
             r->suppressed, r->sample, TD_LOG_BURST, TD_LOG_WINDOW_MS / 1000);
    r->window_ms = now;
    r->lines = r->suppressed = 0;
}

void td_log_tick(td_server *s, int all) {
    uint64_t now = td_now_ms();
    for (int i = 0; i < TD_LOG_KINDS; i++)
        if (s->rates[i].suppressed > 0 && (all || now - s->rates[i].window_ms >= TD_LOG_WINDOW_MS))
            roll_window(s, &s->rates[i], now);
}

void td_log(td_server *s, int level, const char *fmt, ...) {
    uint64_t now = td_now_ms();
    td_rate *r = rate_of(s, fmt);
    if (now - r->window_ms >= TD_LOG_WINDOW_MS)
        roll_window(s, r, now);
    va_list ap;
    if (++r->lines > TD_LOG_BURST) {
        if (r->suppressed++ == 0) { /* one formatting per window, not per line held back */
            va_start(ap, fmt);
            vsnprintf(r->sample, sizeof(r->sample), fmt, ap);
            va_end(ap);
        }
        return;
    }
    va_start(ap, fmt);
    vline(s, level, fmt, ap);
    va_end(ap);
}

void td_reopen_log(td_server *s) {
    if (s->log_path == NULL)
        return;
    FILE *f = td_open_log(s->log_path);
    if (f == NULL) {
        td_log(s, TD_ERROR, "cannot reopen log %s: %s; keeping the old one", s->log_path, strerror(errno));
        return;
    }
    if (s->log != stderr)
        fclose(s->log);
    s->log = f;
    td_log(s, TD_INFO, "log reopened (SIGHUP)");
}
