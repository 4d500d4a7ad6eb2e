/* Walking the mappings of one range of the address space. */
#ifndef XPMEM_MAPS_WALK_H
#define XPMEM_MAPS_WALK_H

#include <stdbool.h>
#include <stdint.h>

#include "private_area.h"
#include "proc_maps.h"

/* The mappings that end above an address, in address order, for work on one range: through the
 * kernel's PROCMAP_QUERY (Linux 6.11 and later), one lookup per mapping however many the process
 * has, where the text costs a line for every mapping (hundreds in an MPI rank) on every read; else
 * through the text, read once. An entry's `path` lives in the area's maps buffer until the next
 * step. The walk resumes at the end of the entry it gave last: what the caller changed inside that
 * entry is not given again, but a mapping that grew across that end since (merged with the next
 * one) may come back starting below it. */
struct maps_walk {
    struct private_area *area;
    int descriptor;     /* /proc/self/maps, for queries; -1 when walking the text */
    uint64_t resume_at; /* the next entry ends above this */
    const char *cursor; /* the text walk's position */
    const char *text_end;
    int error;          /* 0 when the walk ended because no mapping is left */
};

/* False with errno set if the process's maps cannot be opened or read. */
bool maps_walk_start(struct maps_walk *walk, struct private_area *area, uint64_t from);
/* The text walk, which kernels without PROCMAP_QUERY get; for tests that compare the two. */
bool maps_walk_start_text(struct maps_walk *walk, struct private_area *area, uint64_t from);
/* The next entry; false when none is left or on failure (walk->error says which). */
bool maps_walk_next(struct maps_walk *walk, struct maps_entry *entry);
void maps_walk_finish(struct maps_walk *walk);

#endif
