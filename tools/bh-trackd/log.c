/*
 * log.c - bh-trackd's log stream.
 *
 * Owns: formatting and writing log lines to server->log, and the per-class
 * rate limit of td_log_event.
 * Must never: write to stdout (query commands own it), or block the loop on
 * anything but the log file itself.
 */
#include <stdarg.h>
#include <time.h>

#include "trackd.h"

uint64_t td_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void vlog(td_server *s, const char *fmt, va_list ap) {
    fprintf(s->log, "bh-trackd: ");
    vfprintf(s->log, fmt, ap);
    fputc('\n', s->log);
    fflush(s->log);
}

void td_log(td_server *s, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vlog(s, fmt, ap);
    va_end(ap);
}

void td_log_event(td_server *s, int cls, const char *fmt, ...) {
    if (++s->logged[cls] > TD_LOG_FIRST) {
        if (s->logged[cls] == TD_LOG_FIRST + 1)
            td_log(s, "(further lines of this kind are counted, not logged)");
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    vlog(s, fmt, ap);
    va_end(ap);
}
