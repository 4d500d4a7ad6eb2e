/* xpmem_make and xpmem_remove: exporting windows of this process's address-space file. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <unistd.h>

#include "address_space_file.h"
#include "debug_log.h"
#include "exporter_watch.h"
#include "export.h"
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

static int open_read_only_copy(int descriptor)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", descriptor);
    return open(path, O_RDONLY | O_CLOEXEC);
}

XPMEM_EXPORT xpmem_segid_t xpmem_make(void *vaddr, size_t size, int permit_type, void *permit_value)
{
    uintptr_t mode = (uintptr_t)permit_value;
    uint64_t base, length;
    if (permit_type != XPMEM_PERMIT_MODE || (mode & ~(uintptr_t)0777) != 0 || window_of(vaddr, size, &base, &length) < 0) {
        errno = EINVAL;
        return -1;
    }
    struct channel *channel = session_channel();
    if (channel == NULL)
        return -1;
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
    /* Execute bits mean nothing for memory; the broker knows read and write. */
    size_t request_length = wire_encode_make_address_space(request, sizeof request, 0, base, length,
                                                           (uint32_t)(mode & 0666), name);
    int descriptors[2] = {file.descriptor, read_only};
    struct wire_message reply;
    /* Counted before asking, so that a concurrent remove of the last other segment does not make the
     * memory private again under this one. */
    session_segment_made();
    int result = channel_call(channel, request, request_length, descriptors, 2, WIRE_MADE, reply_buffer,
                              sizeof reply_buffer, &reply, NULL);
    close(read_only);
    if (result < 0 || reply.as.made.segment == 0 || reply.as.made.segment > (uint64_t)INT64_MAX) {
        int saved = result < 0 ? errno : EPROTO;
        (void)session_segment_removed(); /* none was made: nothing to make private for it */
        errno = saved;
        return -1;
    }
    return (xpmem_segid_t)reply.as.made.segment;
}

XPMEM_EXPORT int xpmem_remove(xpmem_segid_t segid)
{
    if (segid <= 0) {
        errno = EINVAL;
        return -1;
    }
    struct channel *channel = session_channel();
    if (channel == NULL)
        return -1;
    uint8_t request[64], reply_buffer[CHANNEL_SMALL_REPLY];
    size_t request_length = wire_encode_remove(request, sizeof request, 0, (uint64_t)segid);
    struct wire_message reply;
    if (channel_call(channel, request, request_length, NULL, 0, WIRE_DONE, reply_buffer, sizeof reply_buffer, &reply,
                     NULL) < 0)
        return -1;
    /* The last segment gone: the memory backed for them becomes private again, so that descriptors
     * importers kept alias nothing live (as XPMEM's remove cuts their mappings). */
    if (session_segment_removed())
        exporter_watch_unback_all();
    return 0;
}
