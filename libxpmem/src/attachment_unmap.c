#include "attachment_unmap.h"

#include <sys/mman.h>

#include "raw_memory.h"
#include "session.h"

void attachment_tell_broker_detached(uint64_t broker_attachment)
{
    struct channel *channel = session_channel();
    if (channel == NULL)
        return;
    uint8_t request[64], reply_buffer[CHANNEL_SMALL_REPLY];
    size_t length = wire_encode_detach(request, sizeof request, 0, broker_attachment);
    struct wire_message reply;
    channel_call(channel, request, length, NULL, 0, WIRE_DONE, reply_buffer, sizeof reply_buffer, &reply, NULL);
}

void attachment_unmap(const struct attachment *attachment)
{
    raw_munmap((void *)attachment->address, attachment->length);
    if (attachment->broker_attachment != 0)
        attachment_tell_broker_detached(attachment->broker_attachment);
}
