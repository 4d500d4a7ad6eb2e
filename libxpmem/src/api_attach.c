/* xpmem_attach and xpmem_detach: mapping windows of another process's exported memory. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "attach_cache.h"
#include "attachment_unmap.h"
#include "attachments.h"
#include "debug_log.h"
#include "export.h"
#include "exports.h"
#include "grant_handles.h"
#include "grants.h"
#include "import_cache.h"
#include "import_faults.h"
#include "pages.h"
#include "raw_memory.h"
#include "session.h"
#include "window_map.h"
#include "xpmem.h"

/* What xpmem_attach mapped, to record. */
struct mapped_window {
    void *address;
    size_t length;
    uint64_t broker_attachment, segment_offset, file_offset;
    /* It stays what a fresh attach would map for as long as it is mapped: an ordinary segment's
     * window (its file changes only by a move, which remaps it), or an address-space window with
     * no hole (an exporter's later mmap there would not show) that follows the exporter's unmaps
     * and remaps (registered for faults: import_faults.h; where the kernel refuses, it would not). */
    bool reusable;
};

/* Whether a window may stay cached once detached: reusable, mapped anywhere (`fixed`: where the
 * application asked, which is never handed to another attach), and not of this process's own
 * segment (fork must copy every mapping of its own address-space file into the child: idle ones
 * would make every fork copy them). */
static bool cacheable(const struct grant *grant, const struct mapped_window *window, bool fixed)
{
    return !fixed && window->reusable && attach_cache_enabled() && !exports_contains(grant->segment);
}

/* Records a window the application now holds; a cacheable one is then counted against the cache's
 * bounds. */
static void *record(const struct grant *grant, const struct mapped_window *window, bool fixed)
{
    struct attachment attachment = {.address = (uintptr_t)window->address, .length = window->length,
                                    .apid = grant->apid, .segment = grant->segment,
                                    .broker_attachment = window->broker_attachment,
                                    .segment_offset = window->segment_offset, .file_offset = window->file_offset,
                                    .references = 1, .cacheable = cacheable(grant, window, fixed)};
    if (attachments_add(attachment) < 0) {
        attachment_unmap(&attachment);
        errno = ENOMEM;
        return (void *)-1;
    }
    if (attachment.cacheable)
        attach_cache_trim();
    return window->address;
}

/* A window of an address-space segment follows the exporter (import_faults.h). Returns whether
 * every extent of it does. */
static bool follow_faults(void *mapped, uint64_t window_offset, const struct wire_extent *extents, uint32_t count)
{
    for (uint32_t index = 0; index < count; index++)
        if (import_faults_watch((uint64_t)(uintptr_t)mapped + (extents[index].start - window_offset),
                                extents[index].length) < 0)
            return false;
    return true;
}

/* Ranges this process already knows are backed need no broker: one mmap of the cached file. */
static void *attach_from_cache(const struct grant *grant, uint64_t offset, size_t length, void *vaddr, int protection,
                               uint64_t *file_offset_out, bool *reusable)
{
    if (!import_cache_enabled())
        return MAP_FAILED;
    import_cache_lock();
    uint64_t file_offset;
    int descriptor = import_cache_find_backed(grant->segment, grant->read_write, offset, length, &file_offset);
    void *mapped = MAP_FAILED;
    if (descriptor >= 0) {
        struct wire_extent whole = {.start = file_offset, .length = length};
        mapped = window_map(vaddr, length, protection, descriptor, file_offset, &whole, 1);
        if (mapped != MAP_FAILED) {
            *reusable = follow_faults(mapped, file_offset, &whole, 1);
            *file_offset_out = file_offset;
        }
    }
    import_cache_unlock();
    return mapped;
}

/* Checks the broker's extents lie inside the window, sorted and disjoint, and decodes them. */
static struct wire_extent *window_extents(const struct wire_message *reply, uint64_t window_offset, size_t length)
{
    uint32_t count = reply->as.attached_window.count;
    struct wire_extent *extents = malloc(sizeof *extents * (count == 0 ? 1 : count));
    if (extents == NULL)
        return NULL;
    uint64_t cursor = window_offset, end = window_offset + length;
    for (uint32_t index = 0; index < count; index++) {
        extents[index] = wire_window_extent(reply->as.attached_window.extents, index);
        uint64_t start = extents[index].start, extent_end = start + extents[index].length;
        if (start < cursor || extent_end > end || extent_end <= start || !is_page_aligned(start)
            || !is_page_aligned(extents[index].length)) {
            debug_log("the broker's attach window has an extent outside it or out of order");
            free(extents);
            errno = EPROTO;
            return NULL;
        }
        cursor = extent_end;
    }
    return extents;
}

static void *map_broker_window(const struct grant *grant, const struct wire_message *reply, int received,
                               uint64_t offset, size_t length, void *vaddr, int protection, uint64_t *file_offset_out,
                               bool *reusable)
{
    void *mapped;
    import_cache_lock();
    int descriptor = import_cache_adopt_descriptor(grant->segment, grant->read_write, received);
    if (reply->header.type == WIRE_ATTACHED) {
        /* An ordinary segment: one memfd, the window at `offset` in it. */
        mapped = raw_mmap(vaddr, length, protection, MAP_SHARED | (vaddr != NULL ? MAP_FIXED : 0), descriptor, (off_t)offset);
        *file_offset_out = offset;
        *reusable = true;
    } else {
        uint64_t window_offset = reply->as.attached_window.file_offset;
        struct wire_extent *extents = window_extents(reply, window_offset, length);
        if (extents == NULL) {
            mapped = MAP_FAILED;
        } else {
            mapped = window_map(vaddr, length, protection, descriptor, window_offset, extents,
                                reply->as.attached_window.count);
            bool whole = reply->as.attached_window.count == 1 && extents[0].start == window_offset
                         && extents[0].length == length;
            if (mapped != MAP_FAILED)
                *reusable = follow_faults(mapped, window_offset, extents, reply->as.attached_window.count) && whole;
            *file_offset_out = window_offset;
            if (mapped != MAP_FAILED && window_offset >= offset)
                import_cache_note_backed(grant->segment, window_offset - offset, extents, reply->as.attached_window.count);
            free(extents);
        }
    }
    int saved = errno;
    import_cache_unlock();
    errno = saved;
    return mapped;
}

struct window_request {
    uint64_t offset, length;
};

static size_t encode_attach(void *buffer, size_t capacity, uint64_t handle, const void *context)
{
    const struct window_request *window = context;
    return wire_encode_attach(buffer, capacity, 0, handle, window->offset, window->length);
}

XPMEM_EXPORT void *xpmem_attach(struct xpmem_addr addr, size_t size, void *vaddr)
{
    if (addr.offset < 0 || !is_page_aligned((uint64_t)addr.offset) || size == 0
        || !is_page_aligned((uint64_t)(uintptr_t)vaddr) || size > SIZE_MAX - page_size()) {
        errno = EINVAL;
        return (void *)-1;
    }
    size_t length = (size + page_size() - 1) & ~(size_t)(page_size() - 1);
    struct channel *channel = session_channel();
    if (channel == NULL)
        return (void *)-1;
    struct grant grant;
    if (addr.apid <= 0 || !grants_find((uint64_t)addr.apid, &grant)) {
        errno = EINVAL;
        return (void *)-1;
    }
    int protection = PROT_READ | (grant.read_write ? PROT_WRITE : 0);
    uint64_t offset = (uint64_t)addr.offset;

    /* Windows that went stale since the last call are unmapped here, on the application's thread,
     * which may talk to the broker (the event thread that marked them may not). */
    attach_cache_purge_stale();
    /* A window mapped at the caller's address (MAP_FIXED) is that mapping, never a cached one. */
    if (vaddr == NULL) {
        void *cached = attach_cache_lookup(grant.apid, offset, length);
        if (cached != NULL)
            return cached;
    }

    struct mapped_window window = {.length = length, .segment_offset = offset};
    window.address = attach_from_cache(&grant, offset, length, vaddr, protection, &window.file_offset,
                                       &window.reusable);
    if (window.address != MAP_FAILED)
        return record(&grant, &window, vaddr != NULL);

    uint8_t *reply_buffer = malloc(WIRE_MAX_REPLY);
    if (reply_buffer == NULL) {
        errno = ENOMEM;
        return (void *)-1;
    }
    /* A permit whose handle the broker forgot (it restarted) gets one again first. */
    struct window_request request = {.offset = offset, .length = length};
    struct wire_message reply;
    int received = -1;
    if (grant_handles_call(grant.apid, &grant, encode_attach, &request, 0, reply_buffer, WIRE_MAX_REPLY, &reply,
                           &received) < 0) {
        free(reply_buffer);
        return (void *)-1;
    }
    if ((reply.header.type != WIRE_ATTACHED && reply.header.type != WIRE_ATTACHED_WINDOW) || received < 0) {
        debug_log("the broker answered attach with type 0x%04x and %s descriptor", reply.header.type,
                  received < 0 ? "no" : "a");
        if (received >= 0)
            close(received);
        free(reply_buffer);
        errno = EPROTO;
        return (void *)-1;
    }
    window.broker_attachment = reply.header.type == WIRE_ATTACHED ? reply.as.attached.attachment
                                                                  : reply.as.attached_window.attachment;
    window.address = map_broker_window(&grant, &reply, received, offset, length, vaddr, protection,
                                       &window.file_offset, &window.reusable);
    free(reply_buffer);
    if (window.address == MAP_FAILED) {
        int saved = errno;
        debug_log("mapping the attach window failed: %m");
        attachment_tell_broker_detached(window.broker_attachment);
        errno = saved;
        return (void *)-1;
    }
    return record(&grant, &window, vaddr != NULL);
}

XPMEM_EXPORT int xpmem_detach(void *vaddr)
{
    attach_cache_purge_stale();
    /* The last reference of a cacheable window leaves it mapped for the next attach. */
    return attach_cache_detach((uintptr_t)vaddr);
}
