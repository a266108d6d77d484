/*
 * report_log.c - the JSON-lines log reporter.
 *
 * Owns: one file descriptor (or stderr) and the line format. An event's
 * domain is written raw ("domain") and unpacked ("device", "mem": see
 * BH_DOMAIN in bufhandle.h), so a reader never has to know the packing.
 * Must never: interleave two lines (each line is one write(2) on an O_APPEND
 * descriptor, shorter than PIPE_BUF) or write to stdout.
 */
#define _DEFAULT_SOURCE /* syscall(SYS_gettid) */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "core/internal.h"

typedef struct log_reporter {
    int fd;
    int owned; /* 1: we opened it and close it */
} log_reporter;

static void log_cb(void *ctx, const bh_event *ev) {
    log_reporter *lr = ctx;
    char line[256];
    int n = snprintf(line, sizeof(line),
                     "{\"kind\":\"%s\",\"domain\":%" PRIu32 ",\"device\":%" PRIu32 ",\"mem\":%" PRIu32
                     ",\"address\":%" PRIu64 ",\"size\":%" PRIu64 ",\"seq\":%" PRIu64
                     ",\"pid\":%ld,\"thread\":%ld}\n",
                     ev->kind == BH_EVENT_ALLOC ? "ALLOC" : "FREE", ev->device, BH_DOMAIN_DEVICE(ev->device),
                     BH_DOMAIN_KIND(ev->device), ev->address, ev->size, ev->seq, (long)getpid(),
                     (long)syscall(SYS_gettid));
    if (n <= 0 || (size_t)n >= sizeof(line))
        return;
    /* A short write to a full disk loses the line; the reporter has no one to
     * tell (it must not print), so it is dropped like any failed report. */
    ssize_t w;
    do
        w = write(lr->fd, line, (size_t)n);
    while (w < 0 && errno == EINTR);
}

bh_status bh_log_reporter_open(const char *path, bh_reporter *out) {
    if (out == NULL)
        return BH_EINVAL;
    log_reporter *lr = bh__calloc(1, sizeof(*lr));
    if (lr == NULL)
        return BH_ENOMEM;
    if (path == NULL || strcmp(path, "-") == 0) {
        lr->fd = STDERR_FILENO;
    } else {
        lr->fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
        if (lr->fd < 0) {
            bh__free(lr);
            return BH_EALLOC;
        }
        lr->owned = 1;
    }
    out->report = log_cb;
    out->ctx = lr;
    return BH_OK;
}

void bh_log_reporter_close(bh_reporter *rep) {
    if (rep == NULL || rep->report != log_cb)
        return;
    log_reporter *lr = rep->ctx;
    if (lr->owned)
        close(lr->fd);
    bh__free(lr);
    rep->report = NULL;
    rep->ctx = NULL;
}

int bh__is_log_reporter(const bh_reporter *rep) { return rep != NULL && rep->report == log_cb; }
