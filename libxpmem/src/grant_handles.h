/* Asking the broker for a permit's handle: at xpmem_get, and again when the broker forgot it. */
#ifndef XPMEM_GRANT_HANDLES_H
#define XPMEM_GRANT_HANDLES_H

#include <stdbool.h>
#include <stdint.h>

#include "grants.h"
#include "wire.h"

/* `get` of `segment`: the broker's handle, and whether it granted read-write. Right after a
 * reconnection the exporter may not have registered its segment again yet: a `get` that finds no
 * such segment is then retried for a while (GRANT_HANDLES_RECLAIM_WAIT_NS). -1 with errno. */
int grant_handles_request(uint64_t segment, bool read_write, uint64_t *handle, bool *granted_read_write,
                          uint64_t *generation);

/* The permit `apid` with a handle the current broker knows, asking for one if it has none. -1 with
 * errno: EINVAL for an apid we do not hold, else the broker's refusal. */
int grant_handles_current(uint64_t apid, struct grant *grant);

/* Sends `request` (which carries the permit's handle) on the connection that issued the handle; when
 * another connection replaced it meanwhile, gets a handle from the new one and calls `encode` to
 * write the request again with it (once). Returns channel_call's result. */
int grant_handles_call(uint64_t apid, struct grant *grant, size_t (*encode)(void *buffer, size_t capacity,
                       uint64_t handle, const void *context), const void *context, uint16_t expected_type,
                       void *reply_buffer, size_t reply_capacity, struct wire_message *reply, int *received_descriptor);

#define GRANT_HANDLES_RECLAIM_WAIT_NS (10LL * 1000000000LL)

#endif
