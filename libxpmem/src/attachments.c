#include "attachments.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/mman.h>

static pthread_mutex_t attachments_lock = PTHREAD_MUTEX_INITIALIZER;
static struct attachment *attachments;
static size_t attachment_count, attachment_capacity;
/* Ticks on every attach and detach; an attachment's last_used is the tick of its last use. */
static uint64_t use_clock;

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

static void remove_at(size_t index) { attachments[index] = attachments[--attachment_count]; }

static bool contains(const struct attachment *attachment, uintptr_t address)
{
    return address >= attachment->address && address - attachment->address < attachment->length;
}

bool attachments_hold_cached(uint64_t apid, uint64_t segment_offset, size_t length, uintptr_t *address)
{
    bool found = false;
    pthread_mutex_lock(&attachments_lock);
    for (size_t index = 0; index < attachment_count; index++) {
        struct attachment *candidate = &attachments[index];
        if (candidate->apid == apid && candidate->segment_offset == segment_offset && candidate->length == length
            && candidate->cacheable && !candidate->stale) {
            candidate->references++;
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
    for (size_t index = 0; index < attachment_count; index++) {
        struct attachment *candidate = &attachments[index];
        /* An idle window is not the application's any more: detaching it again is EINVAL, as after
         * a detach that unmapped. */
        if (!contains(candidate, address) || candidate->references == 0)
            continue;
        candidate->references--;
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
    }
    pthread_mutex_unlock(&attachments_lock);
    return chosen != SIZE_MAX;
}

bool attachments_take_coldest_idle(struct attachment *attachment) { return take_idle(attachment, false); }
bool attachments_take_stale_idle(struct attachment *attachment) { return take_idle(attachment, true); }

void attachments_mark_stale(uint64_t segment, uint64_t segment_offset, uint64_t length)
{
    uint64_t end = length > UINT64_MAX - segment_offset ? UINT64_MAX : segment_offset + length;
    pthread_mutex_lock(&attachments_lock);
    for (size_t index = 0; index < attachment_count; index++) {
        struct attachment *candidate = &attachments[index];
        if (candidate->segment == segment && candidate->segment_offset < end
            && segment_offset < candidate->segment_offset + candidate->length)
            candidate->stale = true;
    }
    pthread_mutex_unlock(&attachments_lock);
}

void attachments_mark_all_stale(void)
{
    pthread_mutex_lock(&attachments_lock);
    for (size_t index = 0; index < attachment_count; index++)
        attachments[index].stale = true;
    pthread_mutex_unlock(&attachments_lock);
}

struct attachment_totals attachments_totals(void)
{
    struct attachment_totals totals = {0};
    pthread_mutex_lock(&attachments_lock);
    for (size_t index = 0; index < attachment_count; index++) {
        const struct attachment *candidate = &attachments[index];
        if (!candidate->cacheable)
            continue;
        totals.cached_entries++;
        totals.cached_bytes += candidate->length;
        if (candidate->references == 0) {
            totals.idle_entries++;
            totals.idle_bytes += candidate->length;
        }
    }
    pthread_mutex_unlock(&attachments_lock);
    return totals;
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
}
