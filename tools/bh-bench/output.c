/*
 * output.c - bh-bench's result table, its verdicts and its printing (see
 * output.h).
 *
 * Owns: the figures array, the verdict rule (every target on a figure's
 * lines, shown once on its first line), the text table and the JSON.
 * Must never: print a verdict in the text that the JSON does not give (the
 * smoke test compares them).
 */
#define _GNU_SOURCE
#include "output.h"

#include <inttypes.h>
#include <string.h>

#include "bench_util.h"

#define MAX_FIGURES 32
static figure figures[MAX_FIGURES];
static int nfigures;

figure *add_figure(const char *name, const char *unit) {
    if (nfigures == MAX_FIGURES)
        bench_die("too many figures");
    figure *f = &figures[nfigures++];
    memset(f, 0, sizeof(*f));
    snprintf(f->name, sizeof(f->name), "%s", name);
    f->unit = unit;
    return f;
}

void add_base(figure *f, const char *name, double value, double min_speedup) {
    if (f->nbase == (int)(sizeof(f->base) / sizeof(f->base[0])))
        bench_die("too many baselines");
    f->base_name[f->nbase] = name;
    f->base[f->nbase] = value;
    f->min_speedup[f->nbase] = min_speedup;
    f->nbase++;
}

/* 1 met, 0 not met, -1 no target. */
static int figure_met(const figure *f) {
    int met = -1;
    for (int b = 0; b < f->nbase; b++)
        if (f->min_speedup[b] > 0)
            met = (met != 0) && f->base[b] / f->bh >= f->min_speedup[b];
    if (f->max_value > 0)
        met = (met != 0) && f->bh <= f->max_value;
    return met;
}

static const char *const cw_names[] = {"retain+release", "intern alias+release", "lookup+release",
                                       "last release+intern new"};
static const char *const cw_keys[] = {"retain_release", "intern_alias_release", "lookup_release",
                                      "last_release_intern_new"};
double config_ns[MAX_CONFIGS][CW_COUNT];

void cpu_model(char *out, size_t len) {
    FILE *f = fopen("/proc/cpuinfo", "r");
    char line[256];
    snprintf(out, len, "unknown");
    while (f != NULL && fgets(line, sizeof(line), f) != NULL) {
        char *colon = strchr(line, ':');
        if (strncmp(line, "model name", 10) == 0 && colon != NULL) {
            snprintf(out, len, "%s", colon + 2);
            out[strcspn(out, "\n\"\\")] = '\0';
            break;
        }
    }
    if (f != NULL)
        fclose(f);
}

static const char *met_text(int met) { return met < 0 ? "" : met ? "met" : "NOT met"; }

/* A figure's targets as text: on its own line (b == 0) the target on its
 * value, and on each baseline's line the speedup target over that baseline. */
static void target_text(const figure *f, int b, char *out, size_t len) {
    int n = 0;
    out[0] = '\0';
    if (b == 0 && f->max_value > 0)
        n = snprintf(out, len, "<= %.3g %s", f->max_value, f->unit);
    if (b < f->nbase && f->min_speedup[b] > 0)
        snprintf(out + n, len - (size_t)n, "%s>= %.2fx", n ? "; " : "", f->min_speedup[b]);
}

void print_text(const opts *o, const char *cpu, const report_cost *rc) {
    printf("bh-bench%s: %s; medians of %d repetitions, %ld operations per thread per measurement\n",
           o->quick ? " --quick" : "", cpu, o->reps, o->ops);
    printf("bufhandle registries: %s; speedup = baseline / bufhandle (above 1: bufhandle is faster)\n",
           configs[figure_config].name);
    printf("a figure's verdict (met / NOT met: every target on its lines) is on its first line\n\n");
    printf("%-52s %13s  %-36s %11s %8s  %-16s %s\n", "figure", "bufhandle", "baseline", "", "speedup",
           "target", "verdict");
    for (int i = 0; i < nfigures; i++) {
        const figure *f = &figures[i];
        int prec = strcmp(f->unit, "ns") == 0 || strcmp(f->unit, "B") == 0 ? 1 : 2;
        for (int b = 0; b < (f->nbase ? f->nbase : 1); b++) {
            char line[256], target[48], speedup[16] = "-"; /* only times have a speedup */
            size_t n = 0;
            target_text(f, b, target, sizeof(target));
            if (b == 0)
                n += (size_t)snprintf(line, sizeof(line), "%-52s %9.*f %-3s", f->name, prec, f->bh, f->unit);
            else
                n += (size_t)snprintf(line, sizeof(line), "%-52s %13s", "", "");
            if (f->nbase > 0 && strcmp(f->unit, "ns") == 0)
                snprintf(speedup, sizeof(speedup), "%.2fx", f->base[b] / f->bh);
            if (f->nbase == 0)
                n += (size_t)snprintf(line + n, sizeof(line) - n, "  %-36s %11s %8s", "-", "", "");
            else
                n += (size_t)snprintf(line + n, sizeof(line) - n, "  %-36s %7.*f %-3s %8s", f->base_name[b],
                                      prec, f->base[b], f->unit, speedup);
            n += (size_t)snprintf(line + n, sizeof(line) - n, "  %-16s %s", target,
                                  b == 0 ? met_text(figure_met(f)) : "");
            while (n > 0 && line[n - 1] == ' ')
                line[--n] = '\0';
            puts(line);
        }
    }
    if (config_ns[0][0] > 0) {
        printf("\nhot path per configuration, 1 thread, 1K live (ns; x = relative to the first line)\n");
        printf("%-32s", "configuration");
        for (int k = 0; k < CW_COUNT; k++)
            printf(" %22s", cw_names[k]);
        printf("\n");
        for (int c = 0; c < nconfigs; c++) {
            printf("%-32s", configs[c].name);
            for (int k = 0; k < CW_COUNT; k++)
                printf(" %13.1f (%5.2fx)", config_ns[c][k], config_ns[c][k] / config_ns[0][k]);
            printf("\n");
        }
    }
    if (rc != NULL)
        report_cost_print_text(rc);
}

void print_json(FILE *out, const opts *o, const char *cpu, const report_cost *rc) {
    fprintf(out, "{\"cpu\":\"%s\",\"quick\":%s,\"reps\":%d,\"ops\":%ld,\"config\":\"%s\",\"figures\":[", cpu,
            o->quick ? "true" : "false", o->reps, o->ops, configs[figure_config].key);
    for (int i = 0; i < nfigures; i++) {
        const figure *f = &figures[i];
        int met = figure_met(f);
        fprintf(out, "%s{\"name\":\"%s\",\"unit\":\"%s\",\"bufhandle\":%.3f,\"baselines\":[", i ? "," : "",
                f->name, f->unit, f->bh);
        for (int b = 0; b < f->nbase; b++) {
            fprintf(out, "%s{\"name\":\"%s\",\"value\":%.3f", b ? "," : "", f->base_name[b], f->base[b]);
            if (strcmp(f->unit, "ns") == 0)
                fprintf(out, ",\"speedup\":%.3f", f->base[b] / f->bh);
            if (f->min_speedup[b] > 0)
                fprintf(out, ",\"target_min_speedup\":%.3f", f->min_speedup[b]);
            fprintf(out, "}");
        }
        fprintf(out, "]");
        if (f->max_value > 0)
            fprintf(out, ",\"target_max\":%.3f", f->max_value);
        fprintf(out, ",\"target_met\":%s}", met < 0 ? "null" : met ? "true" : "false");
    }
    fprintf(out, "],\"configs\":[");
    for (int c = 0; c < nconfigs && config_ns[0][0] > 0; c++) {
        fprintf(out, "%s{\"name\":\"%s\",\"flags\":%" PRIu32, c ? "," : "", configs[c].name,
                configs[c].flags);
        for (int k = 0; k < CW_COUNT; k++)
            fprintf(out, ",\"%s_ns\":%.3f", cw_keys[k], config_ns[c][k]);
        fprintf(out, "}");
    }
    fprintf(out, "]");
    if (rc != NULL)
        report_cost_print_json(out, rc);
    fprintf(out, "}\n");
}
