#include "maps_walk.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <sys/ioctl.h>
#include <unistd.h>

/* The kernel's interface (include/uapi/linux/fs.h since Linux 6.11), declared here because the C
 * library's headers of older distributions lack it; its layout and number are fixed ABI. */
struct procmap_query {
    uint64_t size;
    uint64_t query_flags;
    uint64_t query_addr;
    uint64_t vma_start;
    uint64_t vma_end;
    uint64_t vma_flags;
    uint64_t vma_page_size;
    uint64_t vma_offset;
    uint64_t inode;
    uint32_t dev_major;
    uint32_t dev_minor;
    uint32_t vma_name_size;
    uint32_t build_id_size;
    uint64_t vma_name_addr;
    uint64_t build_id_addr;
};
_Static_assert(sizeof(struct procmap_query) == 104, "struct procmap_query is 104 bytes");

#define PROCMAP_QUERY_IOCTL _IOWR('f', 17, struct procmap_query)
#define QUERY_VMA_READABLE 0x01
#define QUERY_VMA_WRITABLE 0x02
#define QUERY_VMA_EXECUTABLE 0x04
#define QUERY_VMA_SHARED 0x08
#define QUERY_COVERING_OR_NEXT_VMA 0x10

/* Set once a query has failed: every later walk reads the text. Kernels before 6.11 refuse it
 * (ENOTTY), and a sandbox's ioctl filter may too (EPERM, EACCES), for good. */
static atomic_bool query_unsupported;

/* This thread's view of the process's maps: /proc/self/maps of a process whose main thread has
 * exited reads empty (and refuses the query), which would back nothing. */
#define MAPS_PATH "/proc/thread-self/maps"

bool maps_walk_start_text(struct maps_walk *walk, struct private_area *area, uint64_t from)
{
    *walk = (struct maps_walk){.area = area, .descriptor = -1, .resume_at = from};
    ssize_t length = proc_maps_read(area);
    if (length < 0)
        return false;
    walk->cursor = area->maps_text;
    walk->text_end = area->maps_text + length;
    return true;
}

bool maps_walk_start(struct maps_walk *walk, struct private_area *area, uint64_t from)
{
    if (atomic_load_explicit(&query_unsupported, memory_order_relaxed))
        return maps_walk_start_text(walk, area, from);
    *walk = (struct maps_walk){.area = area, .descriptor = open(MAPS_PATH, O_RDONLY | O_CLOEXEC), .resume_at = from};
    return walk->descriptor >= 0;
}

static bool next_from_text(struct maps_walk *walk, struct maps_entry *entry)
{
    while (proc_maps_next(&walk->cursor, walk->text_end, entry)) {
        if (entry->end > walk->resume_at) {
            walk->resume_at = entry->end;
            return true;
        }
    }
    return false;
}

bool maps_walk_next(struct maps_walk *walk, struct maps_entry *entry)
{
    if (walk->descriptor < 0)
        return next_from_text(walk, entry);
    uint32_t name_room = walk->area->maps_capacity < UINT32_MAX ? (uint32_t)walk->area->maps_capacity : UINT32_MAX;
    struct procmap_query query = {.size = sizeof query, .query_flags = QUERY_COVERING_OR_NEXT_VMA,
                                  .query_addr = walk->resume_at, .vma_name_size = name_room,
                                  .vma_name_addr = (uint64_t)(uintptr_t)walk->area->maps_text};
    if (ioctl(walk->descriptor, PROCMAP_QUERY_IOCTL, &query) < 0) {
        if (errno == ENOENT)
            return false; /* no mapping at or above it */
        atomic_store_explicit(&query_unsupported, true, memory_order_relaxed);
        close(walk->descriptor);
        if (!maps_walk_start_text(walk, walk->area, walk->resume_at)) {
            walk->error = errno;
            return false;
        }
        return next_from_text(walk, entry);
    }
    *entry = (struct maps_entry){
        .start = query.vma_start, .end = query.vma_end, .offset = query.vma_offset,
        .readable = (query.vma_flags & QUERY_VMA_READABLE) != 0, .writable = (query.vma_flags & QUERY_VMA_WRITABLE) != 0,
        .executable = (query.vma_flags & QUERY_VMA_EXECUTABLE) != 0, .shared = (query.vma_flags & QUERY_VMA_SHARED) != 0,
        .device_major = query.dev_major, .device_minor = query.dev_minor, .inode = query.inode,
        .path = walk->area->maps_text,
        /* The size counts the terminating NUL; 0 when the mapping has no name. */
        .path_length = query.vma_name_size > 0 ? query.vma_name_size - 1 : 0};
    walk->resume_at = query.vma_end;
    return true;
}

void maps_walk_finish(struct maps_walk *walk)
{
    if (walk->descriptor >= 0)
        close(walk->descriptor);
    walk->descriptor = -1;
}
