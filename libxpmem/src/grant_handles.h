/* Asking the broker for a permit's handle: at xpmem_get, and again when the broker forgot it. */
#ifndef XPMEM_GRANT_HANDLES_H
#define XPMEM_GRANT_HANDLES_H

#include <stdbool.h>
#include <stdint.h>

#include "grants.h"

/* `get` of `segment`: the broker's handle, and whether it granted read-write. Right after a
 * reconnection the exporter may not have registered its segment again yet: a `get` that finds no
 * such segment is then retried for a while (GRANT_HANDLES_RECLAIM_WAIT_NS). -1 with errno. */
int grant_handles_request(uint64_t segment, bool read_write, uint64_t *handle, bool *granted_read_write);

/* The permit `apid` with a handle the current broker knows, asking for one if it has none. -1 with
 * errno: EINVAL for an apid we do not hold, else the broker's refusal. */
int grant_handles_current(uint64_t apid, struct grant *grant);

#define GRANT_HANDLES_RECLAIM_WAIT_NS (10LL * 1000000000LL)

#endif
