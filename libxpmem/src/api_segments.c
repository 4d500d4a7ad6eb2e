/* xpmem_make and xpmem_remove: exporting windows of this process's address-space file. */
#include <errno.h>
#include <stdint.h>

#include "debug_log.h"
#include "exporter_watch.h"
#include "export.h"
#include "export_claims.h"
#include "exports.h"
#include "hook_notices.h"
#include "pages.h"
#include "session.h"
#include "xpmem.h"

/* Turns (vaddr, size) into the window [base, base + length) of the address-space file. */
static int window_of(void *vaddr, size_t size, uint64_t *base, uint64_t *length)
{
    *base = (uint64_t)(uintptr_t)vaddr;
    if (!is_page_aligned(*base) || *base >= ADDRESS_SPACE_LIMIT)
        return -1;
    uint64_t room = ADDRESS_SPACE_LIMIT - *base;
    if (size == XPMEM_MAXADDR_SIZE) {
        *length = room; /* "everything from vaddr up" */
        return 0;
    }
    if (size == 0 || !is_page_aligned(size))
        return -1;
    *length = size < room ? size : room; /* nothing lives above the limit to export */
    return 0;
}

XPMEM_EXPORT xpmem_segid_t xpmem_make(void *vaddr, size_t size, int permit_type, void *permit_value)
{
    uintptr_t mode = (uintptr_t)permit_value;
    /* Execute bits mean nothing for memory; the broker knows read and write. */
    struct export export = {.permit = (uint32_t)(mode & 0666)};
    if (permit_type != XPMEM_PERMIT_MODE || (mode & ~(uintptr_t)0777) != 0
        || window_of(vaddr, size, &export.base, &export.length) < 0) {
        errno = EINVAL;
        return -1;
    }
    struct channel *channel = session_channel();
    if (channel == NULL)
        return -1;
    if (exports_draw_token(export.token) < 0)
        return -1;
    /* Here, on the application's thread, before any peer can make us back memory. */
    hook_notices_start();
    /* Counted before asking, so that a concurrent remove of the last other segment does not make the
     * memory private again under this one. */
    session_segment_made();
    exports_begin_change();
    int result = export_claims_send(channel, &export) < 0 || exports_add(&export) < 0 ? -1 : 0;
    int saved = errno;
    exports_end_change();
    if (result < 0) {
        /* None was made; but a remove meanwhile of the last other window left its memory shared,
         * counting on this one: it is the last now. */
        if (session_segment_removed() && exporter_watch_unback_all())
            session_discard_address_space(false);
        errno = saved;
        return -1;
    }
    return (xpmem_segid_t)export.segment;
}

XPMEM_EXPORT int xpmem_remove(xpmem_segid_t segid)
{
    if (segid <= 0) {
        errno = EINVAL;
        return -1;
    }
    /* Connected first (that may register our segments again), then forgotten before the broker is
     * asked: a reconnection from now on does not register it again, even one that happens while
     * there is no broker to tell. */
    struct channel *channel = session_channel();
    exports_begin_change();
    bool ours = exports_remove((uint64_t)segid);
    int result = -1;
    if (channel != NULL) {
        uint8_t request[64], reply_buffer[CHANNEL_SMALL_REPLY];
        size_t request_length = wire_encode_remove(request, sizeof request, 0, (uint64_t)segid);
        struct wire_message reply;
        result = channel_call(channel, request, request_length, NULL, 0, WIRE_DONE, reply_buffer, sizeof reply_buffer,
                              &reply, NULL);
    }
    int saved = errno;
    exports_end_change();
    errno = saved;
    if (!ours)
        return result; /* not this process's: the broker's answer is the whole answer */
    /* Ours, it is gone whatever the broker said: a broker that lost the connection meanwhile
     * forgot it, and no reconnection registers it again. */
    if (result < 0)
        debug_log("the broker did not confirm the removal of segment %lld: %m", (long long)segid);
    /* The last segment gone: the memory backed for them becomes private again, so that descriptors
     * importers kept alias nothing live (as XPMEM's remove cuts their mappings). */
    if (session_segment_removed() && exporter_watch_unback_all())
        session_discard_address_space(false);
    return 0;
}
