#include "export_claims.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

#include "address_space_file.h"
#include "debug_log.h"
#include "wire.h"

static int open_read_only_copy(int descriptor)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", descriptor);
    return open(path, O_RDONLY | O_CLOEXEC);
}

int export_claims_send(struct channel *channel, struct export *export)
{
    struct address_space_file file;
    if (address_space_file_open(&file) < 0)
        return -1;
    int read_only = open_read_only_copy(file.descriptor);
    if (read_only < 0) {
        debug_log("cannot reopen the address-space file read-only: %m");
        return -1;
    }
    uint8_t request[WIRE_MAX_REQUEST], reply_buffer[CHANNEL_SMALL_REPLY];
    char name[64];
    snprintf(name, sizeof name, "%.40s[%d]", program_invocation_short_name, (int)getpid());
    size_t request_length = wire_encode_claim_address_space(request, sizeof request, 0, export->segment, export->token,
                                                            export->base, export->length, export->permit, name);
    int descriptors[2] = {file.descriptor, read_only};
    struct wire_message reply;
    int result = channel_call(channel, request, request_length, descriptors, 2, WIRE_MADE, reply_buffer,
                              sizeof reply_buffer, &reply, NULL);
    int saved = errno;
    close(read_only);
    if (result < 0) {
        errno = saved;
        return -1;
    }
    uint64_t made = reply.as.made.segment;
    if (made == 0 || made > (uint64_t)INT64_MAX || (export->segment != 0 && made != export->segment)) {
        errno = EPROTO;
        return -1;
    }
    export->segment = made;
    return 0;
}
