/*
 * rundir.h - where bh-trackd's socket lives by default, decided in one place
 * for the library's socket reporter and for bh-trackd.
 *
 * Owns: the default-path rule and the private-directory checks behind it.
 * Must never: depend on the rest of the library (tools compile rundir.c on
 * their own), print anything, or accept a directory another user could have
 * planted or can write into.
 */
#ifndef BH_RUNDIR_H
#define BH_RUNDIR_H

#include <stddef.h>

#define BH__SOCKET_NAME "bh-trackd.sock"

/* 0 if path is a directory (not a symbolic link) owned by uid with mode
 * exactly 0700; else -1 with errno set (ENOENT and the like from lstat,
 * ENOTDIR, EPERM: wrong owner or mode). */
int bh__private_dir_ok(const char *path, unsigned uid);

/* parent + "/bh-trackd-UID" (UID: the effective uid) into buf: created with
 * mode 0700 if missing, then checked with bh__private_dir_ok, so a directory
 * someone else made first (or a link) is refused. Returns 0, or -1 with errno
 * set (ENAMETOOLONG when buf is too small, EPERM when not private). */
int bh__user_dir(const char *parent, char *buf, size_t cap);

/* The directory for bh-trackd's socket, into buf (cap bytes, terminated):
 * $XDG_RUNTIME_DIR when it is set and passes bh__private_dir_ok for the
 * effective uid; else bh__user_dir("/tmp"). Returns 0, or -1 with errno set. */
int bh__default_dir(char *buf, size_t cap);

/* bh__default_dir() + "/" BH__SOCKET_NAME, with the same returns. */
int bh__default_socket_path(char *buf, size_t cap);

#endif
