/*
 * output.c - what bh-demo prints: the table comparing the two runs (with a
 * line saying what each row counts) and the same figures as JSON.
 * Owns: the rows, their labels and explanations, the JSON field names
 * (what tests/CMakeLists.txt's demo tests read).
 * Must never: compute a figure (the runs and the tracker do) or print to
 * stderr.
 */
#include <inttypes.h>
#include <stdio.h>

#include "demo.h"

uint64_t demo_leaks_of(const result *r) { return r->track.leaks + r->sim_live; }

/* The memory kind of a domain, by the one list of kind names (the simulated
 * device has DRAM and L1 only). */
static const char *mem_name(uint32_t domain) {
    static const char *const names[] = BH_MEM_KIND_NAMES;
    uint32_t k = BH_DOMAIN_KIND(domain);
    return k < sizeof(names) / sizeof(names[0]) ? names[k] : "user";
}

/* One table row: the two runs' values and one line saying what it counts. */
typedef struct row {
    const char *label;
    uint64_t v[2];
    const char *why;
} row;

void demo_print_table(const options *o, const result *r) {
    printf("bh-demo: %u devices, %u threads, %u layers, %u steps, %u aliases, seed %" PRIu64 "\n", o->devices,
           o->threads, o->layers, o->steps, o->aliases, o->seed);
    printf("tracker: %s\n", r[0].from_trackd || r[1].from_trackd
                                ? "bh-trackd (each run a client process, through the socket reporter)"
                            : o->trackd_missing ? "in-process (FALLBACK: no bh-trackd next to bh-demo)"
                                                : "in-process");
    if (o->tt_server != NULL)
        printf("reported to the TT allocation server at %s (its log has the unknown-buffer warnings)\n",
               o->tt_server);
    printf("\n");
    /* The lines that carry this run's numbers, where they show how a row comes
     * about. Each line fits 80 columns after the label. */
    char per_device[96], objects[96], alloc_reports[96];
    snprintf(per_device, sizeof(per_device),
             "per device: %" PRIu64 " mesh buffers x %u devices, each on every device", r[0].meshes,
             o->devices);
    snprintf(objects, sizeof(objects),
             "raw: each of the %" PRIu64 " Buffer objects frees; handles: once, at the last release",
             r[0].objects);
    snprintf(alloc_reports, sizeof(alloc_reports),
             "raw: %" PRIu64 ", one per mesh buffer, on device 0 only; handles: one per allocation",
             r[0].meshes);
    const row rows[] = {
        {"device allocations", {r[0].sim.allocs, r[1].sim.allocs}, per_device},
        {"allocator frees", {r[0].sim.frees, r[1].sim.frees}, objects},
        {"double frees (allocator)",
         {r[0].sim.double_frees, r[1].sim.double_frees},
         "frees of an address already free on its device (= frees - allocations)"},
        {"ALLOC reports", {r[0].alloc_reports, r[1].alloc_reports}, alloc_reports},
        {"FREE reports",
         {r[0].free_reports, r[1].free_reports},
         "raw: one per Buffer object; handles: one per allocation, after its ALLOC"},
        {"unknown buffer (tracker)",
         {r[0].track.unknown_frees, r[1].track.unknown_frees},
         "FREEs with no live ALLOC at that device+address (raw: FREE - ALLOC reports)"},
        {"duplicate ALLOC (tracker)",
         {r[0].track.duplicate_allocs, r[1].track.duplicate_allocs},
         "ALLOCs of a device+address the tracker already holds live"},
        {"leaks",
         {demo_leaks_of(&r[0]), demo_leaks_of(&r[1])},
         "allocations still live at the end (tracker or allocator)"},
        {"peak live MiB (allocator)",
         {r[0].sim.peak_live_bytes >> 20, r[1].sim.peak_live_bytes >> 20},
         "most reserved at once, in whole slots: varies with how the threads overlap"},
        {"skipped (pool full etc.)",
         {r[0].failures, r[1].failures},
         "mesh buffers or aliases not made (allocator slots full)"},
        {"reports dropped",
         {r[0].reports_dropped, r[1].reports_dropped},
         "events the socket reporter could not deliver (server gone or too slow)"},
        {"reports withheld (TT)",
         {r[0].reports_withheld, r[1].reports_withheld},
         "kept back on purpose by the TT reporter (FREEs of ALLOCs it never sent)"},
        {"TT records sent",
         {r[0].tt_records, r[1].tt_records},
         "--tt-server: raw as TT's own client (every FREE); handles by the reporter"},
    };
    size_t i;
    printf("%-27s %20s %20s\n", "", r[0].name, r[1].name);
    for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
        printf("%-27s %20" PRIu64 " %20" PRIu64 "\n", rows[i].label, rows[i].v[0], rows[i].v[1]);
    printf("%-27s %20.3f %20.3f\n", "time (s)", r[0].seconds, r[1].seconds);
    printf("\nwhat each row counts:\n");
    for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
        printf("  %-27s %s\n", rows[i].label, rows[i].why);
    printf("  %-27s %s\n", "time (s)", "wall time; not a benchmark (tools/bh-bench measures costs)");

    if (r[0].nworst > 0) {
        printf("\nraw run: addresses freed most often relative to their allocations\n");
        printf("  %-6s %-4s %-12s %10s %10s\n", "device", "mem", "address", "allocs", "frees");
        for (i = 0; i < r[0].nworst; i++) {
            const bh_track_entry *e = &r[0].worst[i];
            printf("  %-6u %-4s 0x%010" PRIx64 " %10" PRIu64 " %10" PRIu64 "\n", BH_DOMAIN_DEVICE(e->device),
                   mem_name(e->device), e->address, e->allocs, e->frees);
        }
        printf("  allocs, frees: the ALLOC and FREE reports the tracker got for that device and address.\n"
               "  frees > allocs: the allocation, its views and its re-created buffers each reported FREE.\n"
               "  allocs 0 on a device other than 0: a mesh buffer's part on that device; the raw runtime\n"
               "  reports the mesh's ALLOC on device 0 only, so every FREE there is an unknown buffer.\n");
    }
    printf("\nhandles run: %s\n", r[1].nworst == 0 ? "no address was freed more often than it was allocated"
                                                   : "some addresses were freed more often than allocated");
}

void demo_print_json_run(const result *r) {
    printf("{\"name\":\"%s\",\"device_allocations\":%" PRIu64 ",\"allocator_frees\":%" PRIu64
           ",\"double_frees\":%" PRIu64 ",\"unknown_allocator_frees\":%" PRIu64 ",\"alloc_reports\":%" PRIu64
           ",\"free_reports\":%" PRIu64 ",\"unknown_frees\":%" PRIu64 ",\"duplicate_allocs\":%" PRIu64
           ",\"leaks\":%" PRIu64 ",\"peak_live_bytes\":%" PRIu64 ",\"skipped\":%" PRIu64 ",\"seconds\":%.6f"
           ",\"reports_dropped\":%" PRIu64 ",\"reports_withheld\":%" PRIu64 ",\"tt_records\":%" PRIu64
           ",\"tracker\":\"%s\",\"mesh_buffers\":%" PRIu64 ",\"buffer_objects\":%" PRIu64,
           r->name, r->sim.allocs, r->sim.frees, r->sim.double_frees, r->sim.unknown_frees, r->alloc_reports,
           r->free_reports, r->track.unknown_frees, r->track.duplicate_allocs, demo_leaks_of(r),
           r->sim.peak_live_bytes, r->failures, r->seconds, r->reports_dropped, r->reports_withheld,
           r->tt_records, r->from_trackd ? "bh-trackd" : "in-process", r->meshes, r->objects);
    printf(",\"most_overfreed\":[");
    for (size_t i = 0; i < r->nworst; i++)
        printf("%s{\"device\":%u,\"mem\":\"%s\",\"address\":%" PRIu64 ",\"allocs\":%" PRIu64
               ",\"frees\":%" PRIu64 "}",
               i ? "," : "", BH_DOMAIN_DEVICE(r->worst[i].device), mem_name(r->worst[i].device),
               r->worst[i].address, r->worst[i].allocs, r->worst[i].frees);
    printf("]}");
}
