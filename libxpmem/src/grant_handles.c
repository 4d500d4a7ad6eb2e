#include "grant_handles.h"

#include <errno.h>
#include <time.h>

#include "debug_log.h"
#include "session.h"
#include "wire.h"

static int request_once(struct channel *channel, uint64_t segment, bool read_write, uint64_t *handle,
                        bool *granted_read_write, uint64_t *generation)
{
    uint8_t request[64], reply_buffer[CHANNEL_SMALL_REPLY];
    size_t request_length = wire_encode_get(request, sizeof request, 0, segment,
                                            read_write ? WIRE_READ_WRITE : WIRE_READ_ONLY);
    struct wire_message reply;
    *generation = channel_generation(channel);
    if (channel_call_on(channel, *generation, request, request_length, NULL, 0, WIRE_GRANTED, reply_buffer,
                        sizeof reply_buffer, &reply, NULL) < 0)
        return -1;
    if (reply.as.granted.handle == 0 || reply.as.granted.handle > (uint64_t)INT64_MAX) {
        errno = EPROTO;
        return -1;
    }
    *handle = reply.as.granted.handle;
    *granted_read_write = reply.as.granted.access == WIRE_READ_WRITE;
    return 0;
}

int grant_handles_request(uint64_t segment, bool read_write, uint64_t *handle, bool *granted_read_write,
                          uint64_t *generation)
{
    for (;;) {
        struct channel *channel = session_channel();
        if (channel == NULL)
            return -1;
        if (request_once(channel, segment, read_write, handle, granted_read_write, generation) == 0)
            return 0;
        if (errno == ESTALE)
            continue; /* reconnected right then: ask the new connection */
        if (errno != ENOENT || !session_reconnected_within(GRANT_HANDLES_RECLAIM_WAIT_NS))
            return -1;
        /* The exporter has not registered its segment with the new broker yet. */
        struct timespec pause = {0, 20 * 1000000};
        nanosleep(&pause, NULL);
    }
}

int grant_handles_current(uint64_t apid, struct grant *grant)
{
    for (;;) {
        if (!grants_find(apid, grant)) {
            errno = EINVAL;
            return -1;
        }
        if (grant->handle != 0)
            return 0;
        uint64_t handle, generation;
        bool read_write;
        if (grant_handles_request(grant->segment, grant->read_write, &handle, &read_write, &generation) < 0)
            return -1;
        if (read_write != grant->read_write) {
            /* Another mode than at xpmem_get: the permit no longer stands for what the caller was given. */
            errno = EACCES;
            return -1;
        }
        grants_set_handle(apid, handle, generation);
        debug_log("permit %llu of segment %llu has broker handle %llu again", (unsigned long long)apid,
                  (unsigned long long)grant->segment, (unsigned long long)handle);
        /* Looked up again: released meanwhile, or set. */
    }
}

int grant_handles_call(uint64_t apid, struct grant *grant, size_t (*encode)(void *buffer, size_t capacity,
                       uint64_t handle, const void *context), const void *context, uint16_t expected_type,
                       void *reply_buffer, size_t reply_capacity, struct wire_message *reply, int *received_descriptor)
{
    for (int attempt = 0;; attempt++) {
        if (grant_handles_current(apid, grant) < 0)
            return -1;
        struct channel *channel = session_channel();
        if (channel == NULL)
            return -1;
        uint8_t request[128];
        size_t length = encode(request, sizeof request, grant->handle, context);
        int result = channel_call_on(channel, grant->generation, request, length, NULL, 0, expected_type, reply_buffer,
                                     reply_capacity, reply, received_descriptor);
        if (result == 0 || errno != ESTALE || attempt > 0)
            return result;
        /* Issued by a connection that was replaced since: on this one it could name another permit. */
        grants_forget_handle(apid, grant->handle);
    }
}
