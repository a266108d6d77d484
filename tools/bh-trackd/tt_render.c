/*
 * tt_render.c - the TT figures in bh-trackd's stats: what TT's allocation
 * server would answer on the same traffic (tt_table.h), next to, never
 * instead of, bh-trackd's own per-process findings (the stats' totals).
 * Owns: the "tt" member of stats --json and the "TT server's view" line of
 * the text. Must never: walk the TT table (the figures are counters).
 */
#include <inttypes.h>

#include "trackd.h"
#include "tt_table.h"

void td_tt_render(td_server *s, td_strbuf *b, int json) {
    td_tt_counts t;
    td_tt_counts_get(s->tt_table, &t);
    if (json) {
        td_sb_printf(b,
                     "\"tt\":{\"live\":%" PRIu64 ",\"live_bytes\":%" PRIu64 ",\"allocs\":%" PRIu64
                     ",\"frees\":%" PRIu64 ",\"unknown_frees\":%" PRIu64 ",\"references\":%" PRIu64
                     ",\"leaks\":%" PRIu64 ",\"leaked_bytes\":%" PRIu64 ",\"refused\":%" PRIu64
                     ",\"evicted_departed\":%" PRIu64 ",\"evicted_over_share\":%" PRIu64
                     ",\"ignored_records\":%" PRIu64 ",\"input_holds\":%" PRIu64 ",\"accept_waits\":%" PRIu64
                     "},",
                     t.live, t.live_bytes, t.allocs, t.frees, t.unknown_frees, t.references, t.leaks,
                     t.leaked_bytes, t.refused, t.evicted_departed, t.evicted_over_share, s->compat_ignored,
                     s->compat_holds, s->compat_waits);
        return;
    }
    td_sb_printf(
        b,
        "TT server's view (compat clients, as TT's allocation server counts): %" PRIu64 " live (%" PRIu64
        " bytes), %" PRIu64 " allocs (%" PRIu64 " of them another reference to a live"
        " buffer), %" PRIu64 " frees, %" PRIu64 " unknown FREEs, %" PRIu64 " leaks (%" PRIu64
        " bytes), %" PRIu64 " records ignored; table full: %" PRIu64 " refused, %" PRIu64
        " made room by dropping a gone process's entry, %" PRIu64 " an entry of a process over its share\n",
        t.live, t.live_bytes, t.allocs, t.references, t.frees, t.unknown_frees, t.leaks, t.leaked_bytes,
        s->compat_ignored, t.refused, t.evicted_departed, t.evicted_over_share);
}
