/* Where attachments.c keeps its records: one array of slots that grows by doubling and reuses the
 * slots of removed records, so that the indexes over it (window_hash.h, address_tree.h,
 * idle_list.h) link records by slot number, which stays valid when the array moves. No locking:
 * attachments.c holds its lock around every call. */
#ifndef XPMEM_ATTACHMENT_SLOTS_H
#define XPMEM_ATTACHMENT_SLOTS_H

#include <stdbool.h>
#include <stdint.h>

#include "attachments.h"

#define NO_SLOT UINT32_MAX

struct attachment_slot {
    struct attachment attachment;
    bool in_use;
    /* window_hash.c: the next record in the same bucket (for a free slot, the next free slot). */
    uint32_t next_in_bucket;
    bool in_window_hash;
    /* address_tree.c: the subtrees of records at lower and at higher addresses. */
    uint32_t lower, higher;
    /* idle_list.c: the neighbours used before and after this record. */
    uint32_t colder, warmer;
    bool in_idle_list;
};

/* Copies `attachment` into a free slot, linked into no index; NO_SLOT with errno ENOMEM when the
 * array cannot grow. */
uint32_t attachment_slots_add(const struct attachment *attachment);
/* Frees the slot (the caller has unlinked it from every index). */
void attachment_slots_remove(uint32_t slot);
struct attachment_slot *attachment_slot(uint32_t slot);
/* Slots in use. */
uint32_t attachment_slots_count(void);
/* The first slot in use at `slot` or after it, NO_SLOT when none: iterate with
 * `for (s = attachment_slots_from(0); s != NO_SLOT; s = attachment_slots_from(s + 1))`. */
uint32_t attachment_slots_from(uint32_t slot);
/* Every slot free again; the array is kept for reuse. */
void attachment_slots_clear(void);

#endif
