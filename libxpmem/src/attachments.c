#include "attachments.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/mman.h>

#include "address_tree.h"
#include "attachment_slots.h"
#include "idle_list.h"
#include "raw_memory.h"
#include "window_hash.h"

/* Guards the records and their indexes: the slots (attachment_slots.h), the hits' hash
 * (window_hash.h), the address tree (address_tree.h) and the idle list (idle_list.h). */
static pthread_mutex_t attachments_lock = PTHREAD_MUTEX_INITIALIZER;
/* Ticks on every attach and detach; an attachment's last_used is the tick of its last use. */
static uint64_t use_clock;
/* Kept as attachments come and go, so that the cache's bounds cost no scan. */
static struct attachment_totals totals;

/* Ranges gone stale, from the event thread, which must never wait for this table's lock: another
 * thread may hold it while stopped for backing, and the stop may be waiting for this very event's
 * acknowledgement. One producer (the event thread; there is one at a time), a ring of published
 * ranges read under the lock; when it is full, everything goes stale instead. */
#define STALE_RING_SLOTS 256
struct stale_range {
    uint64_t segment, offset, length;
};
static struct stale_range stale_ring[STALE_RING_SLOTS];
static _Atomic uint64_t stale_published, stale_applied;
static _Atomic bool stale_overflowed;

static void count(const struct attachment *attachment, int sign)
{
    if (!attachment->cacheable)
        return;
    totals.cached_entries += (size_t)sign;
    totals.cached_bytes += (size_t)sign * attachment->length;
    if (attachment->references == 0) {
        totals.idle_entries += (size_t)sign;
        totals.idle_bytes += (size_t)sign * attachment->length;
    }
}

static struct attachment *record_at(uint32_t slot) { return &attachment_slot(slot)->attachment; }

/* Whether an attachment cache hit may return it. */
static bool hittable(const struct attachment *attachment) { return attachment->cacheable && !attachment->stale; }

static bool contains(const struct attachment *attachment, uintptr_t address)
{
    return address >= attachment->address && address - attachment->address < attachment->length;
}

/* An attach hit or a detach: the record is used now, leaves the idle list when held and joins it at
 * the warm end when nobody holds it any more; the totals follow. */
static void set_references(uint32_t slot, unsigned references)
{
    struct attachment *attachment = record_at(slot);
    count(attachment, -1);
    attachment->references = references;
    attachment->last_used = ++use_clock;
    count(attachment, +1);
    if (references > 0)
        idle_list_remove(slot);
    else
        idle_list_append_warmest(slot);
}

static void remove_slot(uint32_t slot)
{
    count(record_at(slot), -1);
    window_hash_remove(slot);
    address_tree_remove(slot);
    idle_list_remove(slot);
    attachment_slots_remove(slot);
}

/* No more hits on it; idle, it moves to the cold end, to be unmapped first (idle_list.h). */
static void go_stale(uint32_t slot)
{
    struct attachment *attachment = record_at(slot);
    if (attachment->stale)
        return;
    attachment->stale = true;
    window_hash_remove(slot);
    if (attachment->references == 0) {
        idle_list_remove(slot);
        idle_list_prepend_coldest(slot);
    }
}

/* A window mapped over others (MAP_FIXED) replaced them: their records go, so that windows recorded
 * never overlap (address_tree.h). The one starting last below the new window's end overlaps it if it
 * ends above the new window's start; if it does not, no earlier one does, as each ends before it. */
static void forget_overlapping_locked(uintptr_t address, size_t length)
{
    if (length == 0)
        return;
    for (;;) {
        uint32_t slot = address_tree_last_at_or_below(address + length - 1);
        if (slot == NO_SLOT || record_at(slot)->address + record_at(slot)->length <= address)
            return;
        remove_slot(slot);
    }
}

int attachments_add(struct attachment attachment)
{
    pthread_mutex_lock(&attachments_lock);
    forget_overlapping_locked(attachment.address, attachment.length);
    attachment.last_used = ++use_clock;
    uint32_t slot = NO_SLOT;
    if (window_hash_reserve(attachment_slots_count() + 1) == 0)
        slot = attachment_slots_add(&attachment);
    if (slot == NO_SLOT) {
        pthread_mutex_unlock(&attachments_lock);
        errno = ENOMEM;
        return -1;
    }
    address_tree_insert(slot);
    if (hittable(&attachment))
        window_hash_insert(slot);
    if (attachment.references == 0 && attachment.stale)
        idle_list_prepend_coldest(slot);
    else if (attachment.references == 0)
        idle_list_append_warmest(slot);
    count(&attachment, +1);
    pthread_mutex_unlock(&attachments_lock);
    return 0;
}

void attachments_for_each(void (*visit)(const struct attachment *attachment, void *context), void *context)
{
    pthread_mutex_lock(&attachments_lock);
    for (uint32_t slot = attachment_slots_from(0); slot != NO_SLOT; slot = attachment_slots_from(slot + 1))
        visit(record_at(slot), context);
    pthread_mutex_unlock(&attachments_lock);
}

/* By segment, a scan: invalidations and releases are rare next to attaches and detaches. */
static void mark_stale_locked(uint64_t segment, uint64_t segment_offset, uint64_t length)
{
    uint64_t end = length > UINT64_MAX - segment_offset ? UINT64_MAX : segment_offset + length;
    for (uint32_t slot = attachment_slots_from(0); slot != NO_SLOT; slot = attachment_slots_from(slot + 1)) {
        const struct attachment *candidate = record_at(slot);
        if (candidate->segment == segment && candidate->segment_offset < end
            && segment_offset < candidate->segment_offset + candidate->length)
            go_stale(slot);
    }
}

static void mark_all_stale_locked(void)
{
    for (uint32_t slot = attachment_slots_from(0); slot != NO_SLOT; slot = attachment_slots_from(slot + 1))
        go_stale(slot);
}

/* Applies what the event thread published. Lock held. */
static void apply_stale_ranges(void)
{
    uint64_t published = atomic_load_explicit(&stale_published, memory_order_acquire);
    uint64_t applied = atomic_load_explicit(&stale_applied, memory_order_relaxed);
    for (; applied < published; applied++) {
        const struct stale_range *range = &stale_ring[applied % STALE_RING_SLOTS];
        mark_stale_locked(range->segment, range->offset, range->length);
    }
    atomic_store_explicit(&stale_applied, applied, memory_order_release);
    if (atomic_load_explicit(&stale_overflowed, memory_order_relaxed) && atomic_exchange(&stale_overflowed, false))
        mark_all_stale_locked();
}

bool attachments_hold_cached(uint64_t apid, uint64_t segment_offset, size_t length, uintptr_t *address)
{
    pthread_mutex_lock(&attachments_lock);
    apply_stale_ranges();
    uint32_t slot = window_hash_find(apid, segment_offset, length);
    if (slot != NO_SLOT) {
        set_references(slot, record_at(slot)->references + 1);
        *address = record_at(slot)->address;
    }
    pthread_mutex_unlock(&attachments_lock);
    return slot != NO_SLOT;
}

/* The record whose window contains `address`, or NO_SLOT. Lock held. */
static uint32_t slot_containing(uintptr_t address)
{
    uint32_t slot = address_tree_last_at_or_below(address);
    return slot != NO_SLOT && contains(record_at(slot), address) ? slot : NO_SLOT;
}

enum attachment_release attachments_release_containing(uintptr_t address, bool keep_idle, struct attachment *taken)
{
    enum attachment_release outcome;
    pthread_mutex_lock(&attachments_lock);
    apply_stale_ranges();
    uint32_t slot = slot_containing(address);
    const struct attachment *held = slot == NO_SLOT ? NULL : record_at(slot);
    /* An idle window is not the application's any more: detaching it again is EINVAL, as after a
     * detach that unmapped. */
    if (held == NULL || held->references == 0) {
        outcome = ATTACHMENT_NOT_HELD;
    } else if (held->references > 1) {
        set_references(slot, held->references - 1);
        outcome = ATTACHMENT_STILL_HELD;
    } else if (keep_idle && hittable(held)) {
        set_references(slot, 0);
        outcome = ATTACHMENT_IDLE;
    } else {
        *taken = *held;
        taken->references = 0;
        taken->last_used = ++use_clock;
        remove_slot(slot);
        outcome = ATTACHMENT_TAKEN;
    }
    pthread_mutex_unlock(&attachments_lock);
    return outcome;
}

/* Removes the coldest idle attachment, when there is one and, if `only_stale`, it is stale (stale
 * idle ones are the coldest: idle_list.h). */
static bool take_idle(struct attachment *attachment, bool only_stale)
{
    pthread_mutex_lock(&attachments_lock);
    apply_stale_ranges();
    uint32_t slot = idle_list_coldest();
    bool found = slot != NO_SLOT && (!only_stale || record_at(slot)->stale);
    if (found) {
        *attachment = *record_at(slot);
        remove_slot(slot);
    }
    pthread_mutex_unlock(&attachments_lock);
    return found;
}

bool attachments_take_coldest_idle(struct attachment *attachment) { return take_idle(attachment, false); }
bool attachments_take_stale_idle(struct attachment *attachment) { return take_idle(attachment, true); }

void attachments_mark_stale(uint64_t segment, uint64_t segment_offset, uint64_t length)
{
    uint64_t published = atomic_load_explicit(&stale_published, memory_order_relaxed);
    if (published - atomic_load_explicit(&stale_applied, memory_order_acquire) >= STALE_RING_SLOTS) {
        atomic_store(&stale_overflowed, true);
        return;
    }
    stale_ring[published % STALE_RING_SLOTS] = (struct stale_range){segment, segment_offset, length};
    atomic_store_explicit(&stale_published, published + 1, memory_order_release);
}

void attachments_mark_all_stale(void)
{
    pthread_mutex_lock(&attachments_lock);
    mark_all_stale_locked();
    pthread_mutex_unlock(&attachments_lock);
}

struct attachment_totals attachments_totals(void)
{
    pthread_mutex_lock(&attachments_lock);
    struct attachment_totals now = totals;
    pthread_mutex_unlock(&attachments_lock);
    return now;
}

bool attachments_find_containing(uintptr_t address, struct attachment *attachment)
{
    pthread_mutex_lock(&attachments_lock);
    uint32_t slot = slot_containing(address);
    if (slot != NO_SLOT)
        *attachment = *record_at(slot);
    pthread_mutex_unlock(&attachments_lock);
    return slot != NO_SLOT;
}

bool attachments_take_by_apid(uint64_t apid, struct attachment *attachment)
{
    uint32_t slot;
    pthread_mutex_lock(&attachments_lock);
    for (slot = attachment_slots_from(0); slot != NO_SLOT; slot = attachment_slots_from(slot + 1))
        if (record_at(slot)->apid == apid)
            break;
    if (slot != NO_SLOT) {
        *attachment = *record_at(slot);
        remove_slot(slot);
    }
    pthread_mutex_unlock(&attachments_lock);
    return slot != NO_SLOT;
}

void attachments_forget_broker_ids(void)
{
    pthread_mutex_lock(&attachments_lock);
    for (uint32_t slot = attachment_slots_from(0); slot != NO_SLOT; slot = attachment_slots_from(slot + 1))
        record_at(slot)->broker_attachment = 0;
    pthread_mutex_unlock(&attachments_lock);
}

/* Lock held. The arrays are kept for the records to come. */
static void forget_all_locked(void)
{
    attachment_slots_clear();
    window_hash_clear();
    address_tree_clear();
    idle_list_clear();
    totals = (struct attachment_totals){0};
}

void attachments_forget_all(void)
{
    pthread_mutex_lock(&attachments_lock);
    forget_all_locked();
    pthread_mutex_unlock(&attachments_lock);
}

void attachments_reset_after_fork(void)
{
    /* Another thread of the parent may have held the lock at fork: it does not exist here. */
    pthread_mutex_init(&attachments_lock, NULL);
    /* Idle cached windows were the parent's library's, not the application's: the child has no use
     * for them (held ones it may still touch, so they stay mapped, unrecorded, as before). */
    for (uint32_t slot = idle_list_coldest(); slot != NO_SLOT; slot = attachment_slot(slot)->warmer)
        raw_munmap((void *)record_at(slot)->address, record_at(slot)->length);
    forget_all_locked();
    stale_published = stale_applied = 0;
    stale_overflowed = false;
}
