#include "proc_maps.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

ssize_t proc_maps_read(struct private_area *area)
{
    for (;;) {
        /* This thread's view: /proc/self/maps of a process whose main thread has exited reads empty. */
        int fd = open("/proc/thread-self/maps", O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            return -1;
        size_t length = 0;
        ssize_t got;
        while (length < area->maps_capacity
               && ((got = read(fd, area->maps_text + length, area->maps_capacity - length)) > 0
                   || (got < 0 && errno == EINTR)))
            if (got > 0)
                length += (size_t)got;
        close(fd);
        if (length < area->maps_capacity)
            return (ssize_t)length;
        /* Full: the listing may have been cut. Read it again into twice the room. */
        if (private_area_grow_maps(area, area->maps_capacity * 2) < 0)
            return -1;
    }
}

static uint64_t parse_hex(const char **cursor, const char *end)
{
    uint64_t value = 0;
    while (*cursor < end) {
        char c = **cursor;
        unsigned digit;
        if (c >= '0' && c <= '9')
            digit = (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            digit = (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            digit = (unsigned)(c - 'A' + 10);
        else
            break;
        value = value * 16 + digit;
        (*cursor)++;
    }
    return value;
}

static uint64_t parse_decimal(const char **cursor, const char *end)
{
    uint64_t value = 0;
    while (*cursor < end && **cursor >= '0' && **cursor <= '9') {
        value = value * 10 + (uint64_t)(**cursor - '0');
        (*cursor)++;
    }
    return value;
}

static bool expect(const char **cursor, const char *end, char wanted)
{
    if (*cursor >= end || **cursor != wanted)
        return false;
    (*cursor)++;
    return true;
}

static void skip_spaces(const char **cursor, const char *end)
{
    while (*cursor < end && **cursor == ' ')
        (*cursor)++;
}

bool proc_maps_next(const char **cursor, const char *end, struct maps_entry *entry)
{
    const char *at = *cursor;
    if (at >= end)
        return false;
    const char *line_end = memchr(at, '\n', (size_t)(end - at));
    if (line_end == NULL)
        line_end = end;
    entry->start = parse_hex(&at, line_end);
    if (!expect(&at, line_end, '-'))
        return false;
    entry->end = parse_hex(&at, line_end);
    if (!expect(&at, line_end, ' ') || line_end - at < 5)
        return false;
    entry->readable = at[0] == 'r';
    entry->writable = at[1] == 'w';
    entry->executable = at[2] == 'x';
    entry->shared = at[3] == 's';
    at += 4;
    skip_spaces(&at, line_end);
    entry->offset = parse_hex(&at, line_end);
    skip_spaces(&at, line_end);
    entry->device_major = (unsigned)parse_hex(&at, line_end);
    if (!expect(&at, line_end, ':'))
        return false;
    entry->device_minor = (unsigned)parse_hex(&at, line_end);
    skip_spaces(&at, line_end);
    entry->inode = parse_decimal(&at, line_end);
    skip_spaces(&at, line_end);
    entry->path = at;
    entry->path_length = (size_t)(line_end - at);
    *cursor = line_end < end ? line_end + 1 : end;
    return true;
}

bool maps_entry_path_is(const struct maps_entry *entry, const char *name)
{
    size_t length = strlen(name);
    return entry->path_length == length && memcmp(entry->path, name, length) == 0;
}

bool maps_entry_path_starts_with(const struct maps_entry *entry, const char *prefix)
{
    size_t length = strlen(prefix);
    return entry->path_length >= length && memcmp(entry->path, prefix, length) == 0;
}
