#include "cgroup_path.h"

#include <stdio.h>
#include <string.h>

/* The line of `text` starting at `*cursor`, without its newline; false past the end. */
static bool next_line(const char **cursor, const char **line, size_t *length)
{
    if (*cursor == NULL || **cursor == '\0')
        return false;
    *line = *cursor;
    const char *end = strchr(*cursor, '\n');
    *length = end != NULL ? (size_t)(end - *cursor) : strlen(*cursor);
    *cursor = end != NULL ? end + 1 : NULL;
    return true;
}

/* A path field of mountinfo as the path it is: the kernel writes a space, tab, newline or backslash
 * in it as \ooo (three octal digits). False when it does not fit. */
static bool copy_mount_field(char *to, size_t capacity, const char *from, size_t length)
{
    size_t out = 0;
    for (size_t in = 0; in < length; in++) {
        char byte = from[in];
        const char *digits = from + in + 1;
        if (byte == '\\' && in + 3 < length && digits[0] >= '0' && digits[0] <= '7' && digits[1] >= '0'
            && digits[1] <= '7' && digits[2] >= '0' && digits[2] <= '7') {
            byte = (char)((digits[0] - '0') * 64 + (digits[1] - '0') * 8 + (digits[2] - '0'));
            in += 3;
        }
        if (out + 1 >= capacity)
            return false;
        to[out++] = byte;
    }
    to[out] = '\0';
    return true;
}

bool cgroup_pressure_path_from(const char *cgroups, const char *mountinfo, char *path, size_t capacity)
{
    const char *cursor = cgroups, *line, *cgroup = NULL;
    size_t length, cgroup_length = 0;
    while (next_line(&cursor, &line, &length)) {
        if (length > 3 && strncmp(line, "0::", 3) == 0) {
            cgroup = line + 3;
            cgroup_length = length - 3;
            break;
        }
    }
    if (cgroup == NULL || cgroup[0] != '/')
        return false;
    cursor = mountinfo;
    while (next_line(&cursor, &line, &length)) {
        /* "ID PARENT MAJ:MIN ROOT MOUNT OPTIONS [OPTIONAL...] - TYPE SOURCE SUPER" */
        if (memmem(line, length, " - cgroup2 ", 11) == NULL)
            continue;
        const char *fields[5];
        size_t lengths[5];
        const char *field = line, *end = line + length;
        int count = 0;
        while (count < 5 && field < end) {
            const char *space = memchr(field, ' ', (size_t)(end - field));
            fields[count] = field;
            lengths[count] = space != NULL ? (size_t)(space - field) : (size_t)(end - field);
            count++;
            field = space != NULL ? space + 1 : end;
        }
        char root[2048], mount[2048];
        if (count < 5 || !copy_mount_field(root, sizeof root, fields[3], lengths[3])
            || !copy_mount_field(mount, sizeof mount, fields[4], lengths[4]))
            return false;
        const char *below = cgroup;
        size_t below_length = cgroup_length;
        if (strcmp(root, "/") != 0) {
            size_t root_length = strlen(root);
            /* Outside what the mount shows: no file of ours there. */
            if (cgroup_length < root_length || strncmp(cgroup, root, root_length) != 0
                || (cgroup_length > root_length && cgroup[root_length] != '/'))
                return false;
            below += root_length;
            below_length -= root_length;
        }
        if (below_length == 1 && below[0] == '/')
            below_length = 0;
        int written = snprintf(path, capacity, "%s%.*s/memory.pressure", mount, (int)below_length, below);
        return written > 0 && (size_t)written < capacity;
    }
    return false;
}
