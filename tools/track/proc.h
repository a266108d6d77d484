/*
 * proc.h - running bh-trackd from the other tools (bh-demo, bh-bench).
 */
#ifndef BH_TRACK_PROC_H
#define BH_TRACK_PROC_H

#include <stddef.h>
#include <sys/types.h>

/* The bh-trackd installed next to the running program, or NULL. */
const char *bh_trackd_next_to_self(void);
/* A connected Unix stream socket to path, or -1. */
int bh_unix_connect(const char *path);
/* 1 if a server accepts connections on path. */
int bh_trackd_reachable(const char *path);
/* Starts `trackd --socket sock --log log [--grace-ms grace_ms]` and waits
 * (up to 5 s) until it accepts. Returns its pid, or -1. */
pid_t bh_trackd_start(const char *trackd, const char *sock, const char *log, const char *grace_ms);
/* SIGTERM, then waits for it. */
void bh_trackd_stop(pid_t pid);

#endif
