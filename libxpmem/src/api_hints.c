/* xpmem_hint_free: this library's extension (not XPMEM's API) with which a process says that some
 * of its pages hold nothing it needs, with the guarantee the kernel's own free-page hints make. */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/mman.h>

#include "backing.h"
#include "export.h"
#include "hook_notices.h"
#include "maps_walk.h"
#include "pages.h"
#include "private_area.h"
#include "proc_maps.h"
#include "raw_memory.h"
#include "xpmem.h"

/* The library's own memory inside [*start, end) is never hinted: it writes there before it reads,
 * but nothing the application says about its pages should reach ours. Returns the part of
 * [start, end) below the first such range, and moves *resume past it. */
static uint64_t end_before_private_area(const struct private_area *area, uint64_t start, uint64_t end, uint64_t *resume)
{
    *resume = end;
    const struct { uint64_t start, end; } own[2] = {
        {(uint64_t)(uintptr_t)area->base, (uint64_t)(uintptr_t)area->base + area->size},
        {(uint64_t)(uintptr_t)area->maps_text, (uint64_t)(uintptr_t)area->maps_text + area->maps_capacity},
    };
    uint64_t cut = end;
    for (int index = 0; index < 2; index++) {
        if (own[index].start < end && own[index].end > start && own[index].start < cut) {
            cut = own[index].start > start ? own[index].start : start;
            *resume = own[index].end < end ? own[index].end : end;
        }
    }
    return cut;
}

/* Private anonymous memory (heap, stacks, anonymous mmaps): the kernel's lazy free takes the hint
 * as it stands. A range peers attached is a shared mapping of the address-space file by now, and
 * file mappings are not anonymous: neither is hinted (see xpmem.h). */
static bool takes_hint(const struct maps_entry *entry)
{
    return !entry->shared && entry->inode == 0 && entry->readable && entry->writable;
}

XPMEM_EXPORT int64_t xpmem_hint_free(void *vaddr, size_t size)
{
    uint64_t start = (uint64_t)(uintptr_t)vaddr;
    if (vaddr == NULL || size == 0 || !is_page_aligned(start) || !is_page_aligned(size) || start + size < start) {
        errno = EINVAL;
        return -1;
    }
    uint64_t end = start + size;
    struct private_area *area = private_area_get();
    if (area == NULL)
        return -1;
    int64_t taken = 0;
    /* Held so that no backing moves a range into the file between the survey and the madvise (the
     * madvise would then fail on the shared mapping, which is harmless, but the count would be
     * wrong); the private area's copy of the maps is the backing's, used under the same lock. */
    backing_lock();
    struct maps_walk walk;
    if (!maps_walk_start(&walk, area, start)) {
        int saved = errno;
        backing_unlock();
        errno = saved;
        return -1;
    }
    struct maps_entry entry;
    uint64_t done = start; /* below this, every mapping has been seen */
    while (maps_walk_next(&walk, &entry)) {
        if (entry.start >= end)
            break;
        uint64_t piece = entry.start > done ? entry.start : done;
        uint64_t piece_end = entry.end < end ? entry.end : end;
        done = entry.end;
        if (!takes_hint(&entry))
            continue;
        while (piece < piece_end) {
            uint64_t resume;
            uint64_t cut = end_before_private_area(area, piece, piece_end, &resume);
            if (cut > piece && raw_madvise((void *)(uintptr_t)piece, cut - piece, MADV_FREE) == 0) {
                taken += (int64_t)(cut - piece);
                hook_notices_record(piece, cut - piece);
            }
            piece = resume;
        }
    }
    int error = walk.error;
    maps_walk_finish(&walk);
    backing_unlock();
    /* Before returning: the caller may reuse the memory at once. */
    hook_notices_tell_now();
    if (error != 0) {
        errno = error; /* the mappings could not all be listed: some pages may have been taken */
        return -1;
    }
    return taken;
}
