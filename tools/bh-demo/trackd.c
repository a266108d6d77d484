/*
 * trackd.c - bh-demo with bh-trackd as the tracker: each run is a client
 * process of its own (the server keys clients by process, and a process's end
 * is when it counts leaks), and the tracker's counts are read back from
 * `bh-trackd stats --json`.
 * Owns: the child process of a run, reading the stats JSON (with the json
 * parser, never by searching its text).
 * Must never: wait without a bound, or count objects outside the "clients"
 * array (the leak and over-freed lists also carry a pid and allocs/frees).
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "demo.h"
#include "json.h"

/* `bh-trackd stats --json`, parsed; NULL on failure. */
static json *trackd_stats(const char *trackd, const char *sock) {
    char cmd[8192];
    snprintf(cmd, sizeof(cmd), "'%s' stats --json --socket '%s'", trackd, sock);
    FILE *f = popen(cmd, "r");
    if (f == NULL)
        return NULL;
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    size_t n;
    while (buf != NULL && (n = fread(buf + len, 1, cap - len - 1, f)) > 0) {
        len += n;
        if (cap - len < 4096) {
            char *nb = realloc(buf, cap *= 2);
            if (nb == NULL) {
                free(buf);
                buf = NULL;
            } else {
                buf = nb;
            }
        }
    }
    if (pclose(f) != 0 || buf == NULL) {
        free(buf);
        return NULL;
    }
    buf[len] = '\0';
    json *j = json_parse(buf);
    free(buf);
    return j;
}

/* Sums the numeric member field over the objects of the "clients" array
 * whose pid is pid. *found: the array is there. */
static uint64_t sum_for_pid(const json *stats, pid_t pid, const char *field, int *found) {
    const json *clients = json_get(stats, "clients");
    *found = clients != NULL && clients->type == JSON_ARRAY;
    uint64_t sum = 0;
    for (size_t i = 0; *found && i < clients->count; i++) {
        const json *c = json_at(clients, i), *p = json_get(c, "pid"), *v = json_get(c, field);
        if (p != NULL && p->type == JSON_NUMBER && p->integer == (uint64_t)pid && v != NULL &&
            v->type == JSON_NUMBER)
            sum += v->integer;
    }
    return sum;
}

int demo_run_in_child(const options *o, int handles, const char *sock, result *res) {
    int fds[2];
    if (pipe(fds) != 0)
        return -1;
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        close(fds[0]);
        result r;
        int rc = demo_run(o, handles, sock, &r);
        ssize_t w = write(fds[1], &r, sizeof(r));
        _exit(rc == 0 && w == (ssize_t)sizeof(r) ? 0 : 1);
    }
    close(fds[1]);
    ssize_t got = read(fds[0], res, sizeof(*res));
    close(fds[0]);
    int status;
    waitpid(pid, &status, 0);
    if (got != (ssize_t)sizeof(*res) || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
        return -1;
    res->name = handles ? "handles (shim)" : "raw Buffer objects";
    /* Wait until the server has settled the ended process: nothing live. */
    json *stats = NULL;
    int found = 0;
    for (int i = 0; i < 300; i++) {
        json_free(stats);
        stats = trackd_stats(o->trackd, sock);
        if (stats != NULL && sum_for_pid(stats, pid, "live", &found) == 0 && found)
            break;
        nanosleep(&(struct timespec){0, 10000000}, NULL);
    }
    if (stats == NULL)
        return -1;
    res->from_trackd = 1;
    res->alloc_reports = sum_for_pid(stats, pid, "allocs", &found);
    res->free_reports = sum_for_pid(stats, pid, "frees", &found);
    res->track.unknown_frees = sum_for_pid(stats, pid, "unknown_frees", &found);
    res->track.duplicate_allocs = sum_for_pid(stats, pid, "duplicate_allocs", &found);
    res->track.leaks = sum_for_pid(stats, pid, "leaks", &found);
    json_free(stats);
    return 0;
}
