/* Reading and parsing /proc/self/maps without allocating: backing does it while other threads
 * are stopped, and one of them may hold malloc's lock. */
#ifndef XPMEM_PROC_MAPS_H
#define XPMEM_PROC_MAPS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "private_area.h"

struct maps_entry {
    uint64_t start;
    uint64_t end;
    bool readable, writable, executable, shared;
    uint64_t offset;
    unsigned device_major, device_minor;
    uint64_t inode;
    const char *path; /* not NUL-terminated; empty for anonymous memory */
    size_t path_length;
};

/* Reads the whole file into area->maps_text (growing it as needed); returns its length or -1. */
ssize_t proc_maps_read(struct private_area *area);
/* Parses the line at *cursor into `entry` and advances; false at the end or on a malformed line. */
bool proc_maps_next(const char **cursor, const char *end, struct maps_entry *entry);
bool maps_entry_path_is(const struct maps_entry *entry, const char *name);
bool maps_entry_path_starts_with(const struct maps_entry *entry, const char *prefix);

#endif
