/*
 * activation.c - listening sockets handed over by systemd (socket activation).
 *
 * Owns: reading what the service manager passed ($LISTEN_PID, $LISTEN_FDS,
 * $LISTEN_FDNAMES) through libsystemd's sd_listen_fds_with_names, checking
 * that each descriptor is the kind of listening socket its name says, and
 * handing them to loop.c (native, compat) and web.c (http).
 *
 * Names (FileDescriptorName= in the .socket units, --fdname= for
 * systemd-socket-activate): "native" (the library's framed protocol),
 * "compat" (TT-Metal's records; turns --compat-tt on), "http" (the HTTP API;
 * turns HTTP on). A single descriptor with another name (systemd's default
 * is the unit's name) is taken as "native".
 *
 * Must never: re-implement the activation protocol, bind, chmod or unlink
 * anything (the service manager owns the socket files), or keep serving with
 * a descriptor it could not place (that is a configuration error: exit 2).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "trackd.h"

#ifdef BH_HAVE_SYSTEMD
#include <systemd/sd-daemon.h>

/* Where a named descriptor goes, and what it must be. */
static int place(td_server *s, int fd, const char *name, int only) {
    int is_unix = sd_is_socket_unix(fd, SOCK_STREAM, 1, NULL, 0) > 0;
    int is_inet = sd_is_socket_inet(fd, AF_UNSPEC, SOCK_STREAM, 1, 0) > 0;
    int *slot = NULL;
    if (strcmp(name, "http") == 0 && is_inet)
        slot = &s->act_http;
    else if (strcmp(name, "compat") == 0 && is_unix)
        slot = &s->act_compat;
    else if ((strcmp(name, "native") == 0 || only) && is_unix)
        slot = &s->act_native;
    if (slot == NULL || *slot >= 0) {
        td_log(s, TD_ERROR,
               "socket activation: descriptor %d named \"%s\" is not a listening %s socket this "
               "server takes (names: native and compat, Unix stream; http, TCP), or comes twice",
               fd, name, strcmp(name, "http") == 0 ? "TCP" : "Unix stream");
        return -1;
    }
    *slot = fd;
    return 0;
}

int td_take_activated(td_server *s) {
    s->act_native = s->act_compat = s->act_http = -1;
    char **names = NULL;
    /* unset_environment=1: children (none today) must not inherit them. */
    int n = sd_listen_fds_with_names(1, &names);
    if (n < 0) {
        td_log(s, TD_ERROR, "socket activation: %s", strerror(-n));
        return -1;
    }
    int rc = 0;
    for (int k = 0; k < n; k++) {
        const char *name = names != NULL && names[k] != NULL ? names[k] : "unknown";
        if (rc == 0 && place(s, SD_LISTEN_FDS_START + k, name, n == 1) != 0)
            rc = -1;
    }
    for (int k = 0; names != NULL && k < n; k++)
        free(names[k]);
    free(names);
    if (rc == 0 && n > 0) {
        if (s->act_compat >= 0)
            s->compat = 1;
        td_log(s, TD_INFO, "socket activation: %d listening socket%s from the service manager", n,
               n == 1 ? "" : "s");
    }
    return rc;
}

#else /* built without libsystemd */

int td_take_activated(td_server *s) {
    s->act_native = s->act_compat = s->act_http = -1;
    const char *pid = getenv("LISTEN_PID");
    if (pid == NULL || (pid_t)strtol(pid, NULL, 10) != getpid())
        return 0;
    td_log(s, TD_ERROR,
           "socket activation: this bh-trackd was built without libsystemd "
           "(apt-get install libsystemd-dev, then rebuild)");
    return -1;
}

#endif
