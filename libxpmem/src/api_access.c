/* xpmem_get and xpmem_release: access permits, checked by the broker against our credentials. */
#include <errno.h>
#include <stdint.h>
#include <sys/mman.h>

#include "attachments.h"
#include "export.h"
#include "grant_handles.h"
#include "grants.h"
#include "session.h"
#include "xpmem.h"

XPMEM_EXPORT xpmem_apid_t xpmem_get(xpmem_segid_t segid, int flags, int permit_type, void *permit_value)
{
    /* permit_value is ignored, as by the kernel module's users (Open MPI passes (void *)0666). */
    (void)permit_value;
    if (segid <= 0 || (flags != XPMEM_RDONLY && flags != XPMEM_RDWR) || permit_type != XPMEM_PERMIT_MODE) {
        errno = EINVAL;
        return -1;
    }
    struct grant grant = {.segment = (uint64_t)segid};
    if (grant_handles_request(grant.segment, flags == XPMEM_RDWR, &grant.handle, &grant.read_write) < 0)
        return -1;
    return (xpmem_apid_t)grants_add(grant);
}

XPMEM_EXPORT int xpmem_release(xpmem_apid_t apid)
{
    struct grant grant;
    if (apid <= 0 || !grants_remove((uint64_t)apid, &grant)) {
        errno = EINVAL;
        return -1;
    }
    /* As with the kernel module, the permit's attachments go with it. The broker frees its own
     * records of them on release. */
    struct attachment attachment;
    while (attachments_take_by_apid((uint64_t)apid, &attachment))
        munmap((void *)attachment.address, attachment.length);
    /* Without a broker (it is restarting) the permit is released all the same: the next broker never
     * heard of it. */
    struct channel *channel = grant.handle == 0 ? NULL : session_channel();
    if (channel == NULL)
        return 0;
    uint8_t request[64], reply_buffer[CHANNEL_SMALL_REPLY];
    size_t request_length = wire_encode_release(request, sizeof request, 0, grant.handle);
    struct wire_message reply;
    if (channel_call(channel, request, request_length, NULL, 0, WIRE_DONE, reply_buffer, sizeof reply_buffer, &reply,
                     NULL) < 0) {
        /* The broker already dropped it (the exporter went away): released all the same. */
        if (errno == ENOENT)
            return 0;
        return -1;
    }
    return 0;
}
