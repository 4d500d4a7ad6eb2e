/* The attachment cache: attachments are shadow mappings of other processes' memory, and like a TLB
 * they are kept after use, aged, and dropped when room is needed.
 *
 * xpmem_attach (vaddr NULL) of a window already mapped through the same apid, offset and length is
 * a hit: the same address, one more reference. xpmem_detach drops a reference; at 0 the window
 * stays mapped ("idle") if it is cacheable (attachments.h). Idle windows are evicted, coldest first
 * (least recently attached or detached), while the cache holds more than XPMEM_ATTACH_CACHE_ENTRIES
 * windows or XPMEM_ATTACH_CACHE_BYTES mapped bytes, and a few at a time while the kernel reports
 * memory pressure (memory_pressure.h). A window the application holds is never evicted. Either bound
 * at 0, or XPMEM_ATTACH_CACHE=0, turns the cache off: detach then unmaps at once, as before. */
#ifndef XPMEM_ATTACH_CACHE_H
#define XPMEM_ATTACH_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "xpmem.h"

bool attach_cache_enabled(void);
/* The cached window of `apid` at `segment_offset` of `length` bytes, with a reference taken; NULL on
 * a miss. Counts the hit or the miss. */
void *attach_cache_lookup(uint64_t apid, uint64_t segment_offset, size_t length);
/* After an attachment was added: evicts the coldest idle windows while over a bound. */
void attach_cache_trim(void);
/* xpmem_detach: 0, or -1 with errno EINVAL when no held window contains `address`. */
int attach_cache_detach(uintptr_t address);
/* Unmaps the idle windows that went stale (invalidated, released, moved, new broker). Called from
 * the application's calls, never from the event thread (it tells the broker). */
void attach_cache_purge_stale(void);
void attach_cache_stats(struct xpmem_attach_cache_stats *stats);

/* In a fork child: counters zero, the bounds read again from the environment on first use. */
void attach_cache_reset_after_fork(void);

#endif
