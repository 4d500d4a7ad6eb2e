/* Mapping an attach window in the importer: the backed extents from the segment's file at their
 * offsets, and every hole from an empty memfd, so that touching a hole raises SIGBUS (a shared
 * mapping past its file's end) as with the kernel module. */
#ifndef XPMEM_WINDOW_MAP_H
#define XPMEM_WINDOW_MAP_H

#include <stddef.h>
#include <stdint.h>

#include "wire.h"

/* Maps `length` bytes at `address` (NULL: anywhere; else MAP_FIXED), whose first byte is at
 * `window_offset` in the file `descriptor`; `extents` (absolute file offsets, sorted, within the
 * window) are mapped from the file and the rest from the empty file. Returns the address or
 * MAP_FAILED with errno. */
void *window_map(void *address, size_t length, int protection, int descriptor, uint64_t window_offset,
                 const struct wire_extent *extents, uint32_t count);

#endif
