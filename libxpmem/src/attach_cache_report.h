/* Telling the broker what this process's attachment cache did (reportAttachCache), so that
 * `xpmemctl clients` shows it per client. At most once a second, and only from calls that cost a
 * broker round trip or an mmap anyway (misses, evictions) or on every 256th hit, so that a hit stays
 * a table lookup; and every time the application reads the counters (xpmem_attach_cache_stats), so
 * that what it read is what the broker shows. A broker that predates the message refuses it, and is
 * not asked again. */
#ifndef XPMEM_ATTACH_CACHE_REPORT_H
#define XPMEM_ATTACH_CACHE_REPORT_H

#include <stdbool.h>

#include "xpmem.h"

/* Sends `stats` when `now` or when the last report is a second old. */
void attach_cache_report(const struct xpmem_attach_cache_stats *stats, bool now);
/* Whether a hit should consider reporting (every 256th). */
bool attach_cache_report_hit_due(void);

/* In a fork child: nothing reported yet for its own connection. */
void attach_cache_report_reset_after_fork(void);

#endif
