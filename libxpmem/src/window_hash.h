/* The records an attachment cache hit may return (cacheable, not stale), found by the window they
 * map: permit, offset in the segment and length. A hash table of chained slots (attachment_slots.h)
 * with at least as many buckets as records, so that a lookup costs the same with one idle window
 * cached or thousands. */
#ifndef XPMEM_WINDOW_HASH_H
#define XPMEM_WINDOW_HASH_H

#include <stddef.h>
#include <stdint.h>

/* Makes room for `records` records without a bucket per chain growing; -1 with errno ENOMEM when
 * the buckets cannot grow (the table stays as it was, and usable). */
int window_hash_reserve(uint32_t records);
void window_hash_insert(uint32_t slot);
/* Does nothing for a slot not in the table. */
void window_hash_remove(uint32_t slot);
/* A record of exactly that window, or NO_SLOT. */
uint32_t window_hash_find(uint64_t apid, uint64_t segment_offset, size_t length);
/* Every record gone; the buckets are kept for reuse. */
void window_hash_clear(void);

#endif
