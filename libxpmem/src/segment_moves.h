/* Following an ordinary (memfd) segment to the fresh file its exporter moved it to, after an
 * importer missed an invalidation deadline (the broker sends `segmentFileReplaced` with the new file,
 * opened as this process's attachments of that access allow). */
#ifndef XPMEM_SEGMENT_MOVES_H
#define XPMEM_SEGMENT_MOVES_H

#include <stdbool.h>
#include <stdint.h>

/* Maps `file` in place of the old one under every window of `segment` attached with that access,
 * and keeps it for later attaches; takes ownership of `file`. */
void segment_moves_follow(uint64_t segment, bool read_write, int file);

#endif
