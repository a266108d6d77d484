/*
 * procstart.h - a process's start time from /proc, read the same way by the
 * library's socket reporter (which states its own in HELLO) and by bh-trackd
 * (which checks a peer's against its /proc).
 *
 * Owns: reading field 22 (starttime, clock ticks since boot) of
 * /proc/PID/stat. Must never: allocate, print, or read past what it read
 * (comm, field 2, may hold spaces and parentheses: parsing starts after its
 * last ')').
 */
#ifndef BH_PROCSTART_H
#define BH_PROCSTART_H

#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* The start time of process pid (0: this process) into *out: 0, or -1 (no
 * such entry in this /proc, or not readable). Never 0 in *out on success
 * (a start time of 0 reads as 1, so 0 can mean "not stated" on the wire). */
static inline int bh_proc_start(long pid, uint64_t *out) {
    char path[48], buf[1024];
    if (pid == 0)
        snprintf(path, sizeof(path), "/proc/self/stat");
    else
        snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = '\0';
    const char *p = strrchr(buf, ')');
    if (p == NULL)
        return -1;
    /* After ')' come fields 3 (state) .. 22 (starttime), each after a
     * space: 20 spaces lead to starttime. (19 led to field 21, itrealvalue,
     * 0 since Linux 2.6.17: every process read as started at 1.) */
    for (int field = 3; field <= 22; field++) {
        p = strchr(p + 1, ' ');
        if (p == NULL)
            return -1;
    }
    uint64_t v = 0;
    int digits = 0;
    for (p++; *p >= '0' && *p <= '9'; p++, digits++)
        v = v * 10 + (uint64_t)(*p - '0');
    if (digits == 0)
        return -1;
    *out = v != 0 ? v : 1;
    return 0;
}

#endif
