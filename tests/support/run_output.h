/*
 * run_output.h - runs a shell command and keeps what it printed, for the
 * tests that check another program's reports (a checker's, helgrind's, a
 * misuse program's).
 *
 * Owns: one popen/read/pclose. Must never: hide how the command ended (the
 * exit code, or -1 when a signal ended it) or overrun the buffer.
 */
#ifndef BH_TEST_RUN_OUTPUT_H
#define BH_TEST_RUN_OUTPUT_H

#include <stdio.h>
#include <sys/wait.h>

/* cmd's stdout (add 2>&1 for stderr) into out, NUL-terminated, at most cap - 1
 * bytes; returns its exit code, -1 if a signal ended it, -2 if it could not
 * be started. */
static inline int run_output(const char *cmd, char *out, size_t cap) {
    out[0] = '\0';
    FILE *p = popen(cmd, "r");
    if (p == NULL)
        return -2;
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = '\0';
    int status = pclose(p);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

#endif /* BH_TEST_RUN_OUTPUT_H */
