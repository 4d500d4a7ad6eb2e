#include "attachment_slots.h"

#include <errno.h>
#include <stdlib.h>

static struct attachment_slot *slots;
/* Slots below `used` have been handed out (some since freed); those at and above it never were. */
static uint32_t capacity, used, in_use_count;
static uint32_t first_free = NO_SLOT;

static int grow(void)
{
    /* Slot numbers must stay below NO_SLOT. */
    if (capacity >= NO_SLOT / 2) {
        errno = ENOMEM;
        return -1;
    }
    uint32_t grown_capacity = capacity == 0 ? 64 : capacity * 2;
    struct attachment_slot *grown = realloc(slots, (size_t)grown_capacity * sizeof *grown);
    if (grown == NULL) {
        errno = ENOMEM;
        return -1;
    }
    slots = grown;
    capacity = grown_capacity;
    return 0;
}

uint32_t attachment_slots_add(const struct attachment *attachment)
{
    uint32_t slot = first_free;
    if (slot != NO_SLOT) {
        first_free = slots[slot].next_in_bucket;
    } else {
        if (used == capacity && grow() < 0)
            return NO_SLOT;
        slot = used++;
    }
    slots[slot] = (struct attachment_slot){.attachment = *attachment, .in_use = true, .next_in_bucket = NO_SLOT,
                                           .lower = NO_SLOT, .higher = NO_SLOT, .colder = NO_SLOT, .warmer = NO_SLOT};
    in_use_count++;
    return slot;
}

void attachment_slots_remove(uint32_t slot)
{
    slots[slot].in_use = false;
    slots[slot].next_in_bucket = first_free;
    first_free = slot;
    in_use_count--;
}

struct attachment_slot *attachment_slot(uint32_t slot) { return &slots[slot]; }

uint32_t attachment_slots_count(void) { return in_use_count; }

uint32_t attachment_slots_from(uint32_t slot)
{
    for (; slot < used; slot++)
        if (slots[slot].in_use)
            return slot;
    return NO_SLOT;
}

void attachment_slots_clear(void)
{
    used = in_use_count = 0;
    first_free = NO_SLOT;
}
