/* What an importer keeps per segment between attaches: one descriptor of the segment's file per
 * access mode (duplicates the broker sends are closed), and the file ranges the broker reported
 * backed. An attach wholly inside known-backed ranges is one mmap with no broker round trip
 * (XPMEM_ATTACH_CACHE=0 turns that off). The broker's invalidateBegin for the segment forgets the
 * ranges, released forgets the segment; the later munmap/reuse work relies on exactly that. */
#ifndef XPMEM_IMPORT_CACHE_H
#define XPMEM_IMPORT_CACHE_H

#include <stdbool.h>
#include <stdint.h>

#include "wire.h"

/* Hold the lock while using a descriptor returned below: a `released` event closes them. */
void import_cache_lock(void);
void import_cache_unlock(void);

/* Keeps `received` as the segment's descriptor for `read_write` access, or closes it when one is
 * already kept. Returns the descriptor to map. Lock held. */
int import_cache_adopt_descriptor(uint64_t segment, bool read_write, int received);
/* Records that the segment's base is at file offset `base` and that `extents` are backed. Lock held. */
void import_cache_note_backed(uint64_t segment, uint64_t base, const struct wire_extent *extents, uint32_t count);
/* The descriptor to map [base + offset, + length) of the segment without asking the broker, or -1.
 * Sets *file_offset. Lock held. */
int import_cache_find_backed(uint64_t segment, bool read_write, uint64_t offset, uint64_t length, uint64_t *file_offset);

/* The segment moved to another file: `received` replaces the descriptor kept for `read_write`
 * access (the old one closes). Returns the descriptor to map, or -1 when nothing was kept. Lock held. */
int import_cache_replace_descriptor(uint64_t segment, bool read_write, int received);
void import_cache_forget_extents(uint64_t segment);
void import_cache_forget_segment(uint64_t segment);
/* Everything, after a reconnection or in a fork child. */
void import_cache_forget_all(void);
bool import_cache_enabled(void);

/* In a fork child: the lock as if never taken, then everything forgotten. */
void import_cache_reset_after_fork(void);

#endif
