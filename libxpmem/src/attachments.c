#include "attachments.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/mman.h>

static pthread_mutex_t attachments_lock = PTHREAD_MUTEX_INITIALIZER;
static struct attachment *attachments;
static size_t attachment_count, attachment_capacity;
/* Ticks on every attach and detach; an attachment's last_used is the tick of its last use. */
static uint64_t use_clock;
/* Kept as attachments come and go, so that the cache's bounds cost no scan. */
static struct attachment_totals totals;
/* Whether some idle attachment went stale since attachments_take_stale_idle last found none. */
static bool stale_idle_possible;

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

int attachments_add(struct attachment attachment)
{
    pthread_mutex_lock(&attachments_lock);
    if (attachment_count == attachment_capacity) {
        size_t capacity = attachment_capacity == 0 ? 64 : attachment_capacity * 2;
        struct attachment *grown = realloc(attachments, capacity * sizeof *grown);
        if (grown == NULL) {
            pthread_mutex_unlock(&attachments_lock);
            errno = ENOMEM;
            return -1;
        }
        attachments = grown;
        attachment_capacity = capacity;
    }
    attachment.last_used = ++use_clock;
    attachments[attachment_count++] = attachment;
    count(&attachment, +1);
    pthread_mutex_unlock(&attachments_lock);
    return 0;
}

void attachments_for_each(void (*visit)(const struct attachment *attachment, void *context), void *context)
{
    pthread_mutex_lock(&attachments_lock);
    for (size_t index = 0; index < attachment_count; index++)
        visit(&attachments[index], context);
    pthread_mutex_unlock(&attachments_lock);
}

static void remove_at(size_t index)
{
    count(&attachments[index], -1);
    attachments[index] = attachments[--attachment_count];
}

static void mark_stale_locked(uint64_t segment, uint64_t segment_offset, uint64_t length)
{
    uint64_t end = length > UINT64_MAX - segment_offset ? UINT64_MAX : segment_offset + length;
    for (size_t index = 0; index < attachment_count; index++) {
        struct attachment *candidate = &attachments[index];
        if (candidate->segment == segment && candidate->segment_offset < end
            && segment_offset < candidate->segment_offset + candidate->length) {
            candidate->stale = true;
            stale_idle_possible = stale_idle_possible || candidate->references == 0;
        }
    }
}

static void mark_all_stale_locked(void)
{
    for (size_t index = 0; index < attachment_count; index++)
        attachments[index].stale = true;
    stale_idle_possible = attachment_count > 0;
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

static bool contains(const struct attachment *attachment, uintptr_t address)
{
    return address >= attachment->address && address - attachment->address < attachment->length;
}

bool attachments_hold_cached(uint64_t apid, uint64_t segment_offset, size_t length, uintptr_t *address)
{
    bool found = false;
    pthread_mutex_lock(&attachments_lock);
    apply_stale_ranges();
    for (size_t index = 0; index < attachment_count; index++) {
        struct attachment *candidate = &attachments[index];
        if (candidate->apid == apid && candidate->segment_offset == segment_offset && candidate->length == length
            && candidate->cacheable && !candidate->stale) {
            count(candidate, -1);
            candidate->references++;
            count(candidate, +1);
            candidate->last_used = ++use_clock;
            *address = candidate->address;
            found = true;
            break;
        }
    }
    pthread_mutex_unlock(&attachments_lock);
    return found;
}

enum attachment_release attachments_release_containing(uintptr_t address, bool keep_idle, struct attachment *taken)
{
    enum attachment_release outcome = ATTACHMENT_NOT_HELD;
    pthread_mutex_lock(&attachments_lock);
    apply_stale_ranges();
    for (size_t index = 0; index < attachment_count; index++) {
        struct attachment *candidate = &attachments[index];
        /* An idle window is not the application's any more: detaching it again is EINVAL, as after
         * a detach that unmapped. */
        if (!contains(candidate, address) || candidate->references == 0)
            continue;
        count(candidate, -1);
        candidate->references--;
        count(candidate, +1);
        candidate->last_used = ++use_clock;
        if (candidate->references > 0) {
            outcome = ATTACHMENT_STILL_HELD;
        } else if (keep_idle && candidate->cacheable && !candidate->stale) {
            outcome = ATTACHMENT_IDLE;
        } else {
            *taken = *candidate;
            remove_at(index);
            outcome = ATTACHMENT_TAKEN;
        }
        break;
    }
    pthread_mutex_unlock(&attachments_lock);
    return outcome;
}

/* Removes an idle attachment: the coldest, or any stale one. */
static bool take_idle(struct attachment *attachment, bool only_stale)
{
    pthread_mutex_lock(&attachments_lock);
    apply_stale_ranges();
    if (only_stale && !stale_idle_possible) {
        pthread_mutex_unlock(&attachments_lock);
        return false; /* the common case, without a scan */
    }
    size_t chosen = SIZE_MAX;
    for (size_t index = 0; index < attachment_count; index++) {
        const struct attachment *candidate = &attachments[index];
        if (candidate->references != 0 || (only_stale && !candidate->stale))
            continue;
        if (chosen == SIZE_MAX || candidate->last_used < attachments[chosen].last_used)
            chosen = index;
        if (only_stale)
            break; /* any stale one will do */
    }
    if (chosen != SIZE_MAX) {
        *attachment = attachments[chosen];
        remove_at(chosen);
    } else if (only_stale) {
        stale_idle_possible = false;
    }
    pthread_mutex_unlock(&attachments_lock);
    return chosen != SIZE_MAX;
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
    bool found = false;
    pthread_mutex_lock(&attachments_lock);
    for (size_t index = 0; index < attachment_count && !found; index++) {
        if (contains(&attachments[index], address)) {
            *attachment = attachments[index];
            found = true;
        }
    }
    pthread_mutex_unlock(&attachments_lock);
    return found;
}

bool attachments_take_by_apid(uint64_t apid, struct attachment *attachment)
{
    bool found = false;
    pthread_mutex_lock(&attachments_lock);
    for (size_t index = 0; index < attachment_count; index++) {
        if (attachments[index].apid == apid) {
            *attachment = attachments[index];
            remove_at(index);
            found = true;
            break;
        }
    }
    pthread_mutex_unlock(&attachments_lock);
    return found;
}

void attachments_forget_overlapping(uintptr_t address, size_t length)
{
    pthread_mutex_lock(&attachments_lock);
    for (size_t index = 0; index < attachment_count;) {
        const struct attachment *existing = &attachments[index];
        if (existing->address < address + length && address < existing->address + existing->length)
            remove_at(index);
        else
            index++;
    }
    pthread_mutex_unlock(&attachments_lock);
}

void attachments_forget_broker_ids(void)
{
    pthread_mutex_lock(&attachments_lock);
    for (size_t index = 0; index < attachment_count; index++)
        attachments[index].broker_attachment = 0;
    pthread_mutex_unlock(&attachments_lock);
}

void attachments_forget_all(void)
{
    pthread_mutex_lock(&attachments_lock);
    attachment_count = 0;
    totals = (struct attachment_totals){0};
    stale_idle_possible = false;
    pthread_mutex_unlock(&attachments_lock);
}

void attachments_reset_after_fork(void)
{
    /* Another thread of the parent may have held the lock at fork: it does not exist here. */
    pthread_mutex_init(&attachments_lock, NULL);
    /* Idle cached windows were the parent's library's, not the application's: the child has no use
     * for them (held ones it may still touch, so they stay mapped, unrecorded, as before). */
    for (size_t index = 0; index < attachment_count; index++)
        if (attachments[index].references == 0)
            munmap((void *)attachments[index].address, attachments[index].length);
    attachments_forget_all();
    stale_published = stale_applied = 0;
    stale_overflowed = false;
}
