/* xpmem_get and xpmem_release: access permits, checked by the broker against our credentials. */
#include <errno.h>
#include <stdint.h>
#include <sys/mman.h>

#include "attachments.h"
#include "export.h"
#include "grant_handles.h"
#include "grants.h"
#include "raw_memory.h"
#include "session.h"
#include "xpmem.h"

/* Tells the broker a permit is given up. 0 also when it holds it no more: it dropped it already (the
 * exporter went away), or there is no broker, or another connection replaced the one that issued it
 * (the broker restarted; the next one never heard of it). */
static int release_handle(uint64_t handle, uint64_t generation)
{
    struct channel *channel = session_channel();
    if (channel == NULL)
        return 0;
    uint8_t request[64], reply_buffer[CHANNEL_SMALL_REPLY];
    size_t request_length = wire_encode_release(request, sizeof request, 0, handle);
    struct wire_message reply;
    /* Only on the connection that issued it: on another the number could be another permit's. */
    if (channel_call_on(channel, generation, request, request_length, NULL, 0, WIRE_DONE, reply_buffer,
                        sizeof reply_buffer, &reply, NULL) < 0)
        return errno == ENOENT || errno == ESTALE ? 0 : -1;
    return 0;
}

XPMEM_EXPORT xpmem_apid_t xpmem_get(xpmem_segid_t segid, int flags, int permit_type, void *permit_value)
{
    /* permit_value is ignored, as by the kernel module's users (Open MPI passes (void *)0666). */
    (void)permit_value;
    if (segid <= 0 || (flags != XPMEM_RDONLY && flags != XPMEM_RDWR) || permit_type != XPMEM_PERMIT_MODE) {
        errno = EINVAL;
        return -1;
    }
    struct grant grant = {.segment = (uint64_t)segid};
    if (grant_handles_request(grant.segment, flags == XPMEM_RDWR, &grant.handle, &grant.read_write, &grant.generation) < 0)
        return -1;
    int64_t apid = grants_add(grant);
    if (apid < 0) {
        /* No room to remember it: the broker must not keep it either. */
        int saved = errno;
        release_handle(grant.handle, grant.generation);
        errno = saved;
    }
    return (xpmem_apid_t)apid;
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
        raw_munmap((void *)attachment.address, attachment.length);
    /* A handle of 0 is one a restarted broker never issued. */
    return grant.handle == 0 ? 0 : release_handle(grant.handle, grant.generation);
}
