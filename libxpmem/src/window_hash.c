#include "window_hash.h"

#include <errno.h>
#include <stdlib.h>

#include "attachment_slots.h"
#include "hash_mix.h"

static uint32_t *buckets; /* each the first slot of its chain, or NO_SLOT */
static uint32_t bucket_count; /* 0, or a power of two */

static uint32_t bucket_of(uint64_t apid, uint64_t segment_offset, size_t length)
{
    return (uint32_t)(hash_mix(apid ^ hash_mix(segment_offset ^ hash_mix(length))) & (bucket_count - 1));
}

static uint32_t bucket_of_slot(uint32_t slot)
{
    const struct attachment *attachment = &attachment_slot(slot)->attachment;
    return bucket_of(attachment->apid, attachment->segment_offset, attachment->length);
}

static void fill_empty(uint32_t *table, uint32_t count)
{
    for (uint32_t bucket = 0; bucket < count; bucket++)
        table[bucket] = NO_SLOT;
}

int window_hash_reserve(uint32_t records)
{
    if (records <= bucket_count)
        return 0;
    uint32_t grown_count = bucket_count == 0 ? 64 : bucket_count;
    while (grown_count < records) {
        if (grown_count > UINT32_MAX / 2) {
            errno = ENOMEM;
            return -1;
        }
        grown_count *= 2;
    }
    uint32_t *grown = malloc((size_t)grown_count * sizeof *grown);
    if (grown == NULL) {
        errno = ENOMEM;
        return -1;
    }
    fill_empty(grown, grown_count);
    uint32_t *old = buckets, old_count = bucket_count;
    buckets = grown;
    bucket_count = grown_count;
    for (uint32_t bucket = 0; bucket < old_count; bucket++) {
        for (uint32_t slot = old[bucket], next; slot != NO_SLOT; slot = next) {
            next = attachment_slot(slot)->next_in_bucket;
            uint32_t moved_to = bucket_of_slot(slot);
            attachment_slot(slot)->next_in_bucket = buckets[moved_to];
            buckets[moved_to] = slot;
        }
    }
    free(old);
    return 0;
}

void window_hash_insert(uint32_t slot)
{
    uint32_t bucket = bucket_of_slot(slot);
    attachment_slot(slot)->next_in_bucket = buckets[bucket];
    attachment_slot(slot)->in_window_hash = true;
    buckets[bucket] = slot;
}

void window_hash_remove(uint32_t slot)
{
    if (!attachment_slot(slot)->in_window_hash)
        return;
    uint32_t *link = &buckets[bucket_of_slot(slot)];
    while (*link != slot)
        link = &attachment_slot(*link)->next_in_bucket;
    *link = attachment_slot(slot)->next_in_bucket;
    attachment_slot(slot)->next_in_bucket = NO_SLOT;
    attachment_slot(slot)->in_window_hash = false;
}

uint32_t window_hash_find(uint64_t apid, uint64_t segment_offset, size_t length)
{
    if (bucket_count == 0)
        return NO_SLOT;
    uint32_t slot = buckets[bucket_of(apid, segment_offset, length)];
    for (; slot != NO_SLOT; slot = attachment_slot(slot)->next_in_bucket) {
        const struct attachment *candidate = &attachment_slot(slot)->attachment;
        if (candidate->apid == apid && candidate->segment_offset == segment_offset && candidate->length == length)
            return slot;
    }
    return NO_SLOT;
}

void window_hash_clear(void) { fill_empty(buckets, bucket_count); }
