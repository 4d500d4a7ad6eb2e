#include "backing.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include "address_space_file.h"
#include "exporter_watch.h"
#include "hook_notices.h"
#include "maps_walk.h"
#include "pages.h"
#include "private_area.h"
#include "proc_maps.h"
#include "raw_memory.h"
#include "shmem_huge.h"
#include "thread_stop.h"

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#define MADV_POPULATE_WRITE 23
#endif

/* pagemap entry bits: the page is in memory, or in swap. Either way it has contents to keep. */
#define PAGEMAP_PRESENT (UINT64_C(1) << 63)
#define PAGEMAP_SWAPPED (UINT64_C(1) << 62)

/* Copy in pieces the kernel accepts in one pwrite (it caps a call just under 2 GiB). */
#define MAX_COPY_CALL (UINT64_C(1) << 30)

static pthread_mutex_t backing_mutex = PTHREAD_MUTEX_INITIALIZER;

void backing_lock(void) { pthread_mutex_lock(&backing_mutex); }
void backing_unlock(void) { pthread_mutex_unlock(&backing_mutex); }
void backing_lock_reset(void) { pthread_mutex_init(&backing_mutex, NULL); }

struct backing_pass {
    struct private_area *area;
    struct address_space_file file;
    int pagemap;
    bool populate;
    /* The huge page size the exporter's huge pages are backed with, or 0 (shmem_huge.h). */
    uint64_t huge;
    /* Survey only: note whether anything would need copying, change nothing. */
    bool surveying;
    bool needs_copy;
    struct backing_result *result;
};

/* Formats the reason into result->text without stdio's locks (snprintf takes none for these
 * conversions, but being explicit costs nothing). */
static void fail(struct backing_pass *pass, uint16_t code, const char *what, int error, uint64_t address)
{
    struct backing_result *result = pass->result;
    if (result->code != 0)
        return;
    result->code = code;
    char *text = result->text;
    size_t room = sizeof result->text;
    size_t length = strlen(what);
    if (length >= room)
        length = room - 1;
    memcpy(text, what, length);
    static const char hex[] = "0123456789abcdef";
    if (address != 0 && length + 20 < room) {
        memcpy(text + length, " at 0x", 6);
        length += 6;
        int shift = 44;
        while (shift > 0 && ((address >> shift) & 0xF) == 0)
            shift -= 4;
        for (; shift >= 0; shift -= 4)
            text[length++] = hex[(address >> shift) & 0xF];
    }
    if (error != 0 && length + 12 < room) {
        memcpy(text + length, ": errno ", 8);
        length += 8;
        char digits[8];
        int count = 0;
        do {
            digits[count++] = (char)('0' + error % 10);
            error /= 10;
        } while (error > 0 && count < 7);
        while (count > 0)
            text[length++] = digits[--count];
    }
    text[length] = '\0';
}

static void add_extent(struct backing_pass *pass, uint64_t start, uint64_t end)
{
    struct backing_result *result = pass->result;
    if (start >= end)
        return;
    if (result->count > 0 && result->extents[result->count - 1].start + result->extents[result->count - 1].length == start) {
        result->extents[result->count - 1].length += end - start;
        return;
    }
    if (result->count == MAX_WORKING_EXTENTS) {
        fail(pass, WIRE_RESOURCE_EXHAUSTED, "the range has too many separate pieces", 0, start);
        return;
    }
    result->extents[result->count].start = start;
    result->extents[result->count].length = end - start;
    result->count++;
}

/* Writes [address, address + length) of our memory into the file at the same offset. A page the
 * kernel cannot read (a private file mapping past its file's end) is left a hole. Returns false
 * on a real failure (out of memory for the file). */
static bool copy_into_file(struct backing_pass *pass, uint64_t address, uint64_t length)
{
    while (length > 0) {
        size_t chunk = length < MAX_COPY_CALL ? (size_t)length : (size_t)MAX_COPY_CALL;
        ssize_t written = pwrite(pass->file.descriptor, (const void *)(uintptr_t)address, chunk, (off_t)address);
        if (written > 0) {
            uint64_t done = (uint64_t)written;
            pass->result->copied_bytes += done;
            address += done;
            length -= done;
            continue;
        }
        if (written < 0 && errno == EINTR)
            continue;
        if (written < 0 && errno == EFAULT) {
            uint64_t skip = page_size() - (address & (page_size() - 1));
            if (skip > length)
                skip = length;
            address += skip;
            length -= skip;
            continue;
        }
        fail(pass, errno == ENOSPC || errno == ENOMEM ? WIRE_RESOURCE_EXHAUSTED : WIRE_INTERNAL_ERROR,
             "cannot write the address-space file", written < 0 ? errno : EIO, address);
        return false;
    }
    return true;
}

/* Prefaults the exporter's new page-table entries for pages that had contents, so its next
 * accesses do not each take a minor fault (populating holes would fill the sparse file). */
static void populate(struct backing_pass *pass, uint64_t address, uint64_t length, bool writable)
{
    if (pass->populate && length > 0)
        raw_madvise((void *)(uintptr_t)address, length, writable ? MADV_POPULATE_WRITE : MADV_POPULATE_READ);
}

static bool map_file_over(struct backing_pass *pass, uint64_t address, uint64_t length, const struct maps_entry *entry)
{
    int protection = PROT_READ | (entry->writable ? PROT_WRITE : 0);
    void *mapped = raw_mmap((void *)(uintptr_t)address, length, protection, MAP_SHARED | MAP_FIXED,
                            pass->file.descriptor, (off_t)address);
    if (mapped == MAP_FAILED) {
        fail(pass, errno == ENOMEM ? WIRE_RESOURCE_EXHAUSTED : WIRE_INTERNAL_ERROR,
             "cannot map the address-space file over the memory", errno, address);
        return false;
    }
    pass->result->remapped_bytes += length;
    hook_notices_record(address, length);
    exporter_watch_add(address, length);
    return true;
}

/* Anonymous memory, a pagemap chunk at a time: copy the runs of pages that exist, map the file
 * over the chunk, prefault the same runs. Untouched pages stay holes and still read as zero. Where
 * shmem huge pages are allowed, fully present huge-page blocks go through back_huge_block instead. */

/* The next run of pages the pagemap says are present (in memory or swapped) at or after *index:
 * [*first, *index) on return. False when no present page is left. */
static bool next_present_run(const uint64_t *entries, uint64_t pages, uint64_t *index, uint64_t *first)
{
    while (*index < pages && (entries[*index] & (PAGEMAP_PRESENT | PAGEMAP_SWAPPED)) == 0)
        (*index)++;
    if (*index >= pages)
        return false;
    *first = *index;
    while (*index < pages && (entries[*index] & (PAGEMAP_PRESENT | PAGEMAP_SWAPPED)) != 0)
        (*index)++;
    return true;
}

/* Writes the present runs of [start, start + pages pages), whose pagemap entries are `entries`. */
static bool copy_present_runs(struct backing_pass *pass, uint64_t start, const uint64_t *entries, uint64_t pages)
{
    uint64_t index = 0, first;
    while (next_present_run(entries, pages, &index, &first)) {
        if (!copy_into_file(pass, start + first * page_size(), (index - first) * page_size()))
            return false;
    }
    return true;
}

/* A block of pass->huge bytes at a multiple of it, which the exporter maps with a huge page, copied
 * into the file through a mapping of its own, aligned alike and asking for huge pages: populating
 * it allocates the file's huge page where the kernel has one to give (else 4 KiB pages, still the
 * right bytes), and fails with an error, not SIGBUS, when memory is short. Only that mapping asks:
 * the exporter's new mapping of the file is made as everywhere else, without the flag, so that the
 * pieces of one buffer backed by different requests stay one mapping (a whole-buffer mremap, as
 * realloc does, needs that); its faults still map a whole huge page at a time. False when the
 * mapping could not be made or populated: pwrite the block instead. */
static bool copy_huge_block(struct backing_pass *pass, uint64_t block)
{
    uint64_t huge = pass->huge;
    uint8_t *reserved = raw_mmap(NULL, 2 * huge, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (reserved == MAP_FAILED)
        return false;
    uint8_t *aligned = (uint8_t *)(((uintptr_t)reserved + huge - 1) & ~(uintptr_t)(huge - 1));
    void *mapped = raw_mmap(aligned, huge, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, pass->file.descriptor,
                            (off_t)block);
    bool copied = mapped != MAP_FAILED && raw_madvise(aligned, huge, MADV_HUGEPAGE) == 0
                  && raw_madvise(aligned, huge, MADV_POPULATE_WRITE) == 0;
    if (copied) {
        memcpy(aligned, (const void *)(uintptr_t)block, huge);
        pass->result->copied_bytes += huge;
    }
    raw_munmap(reserved, 2 * huge);
    return copied;
}

static bool back_anonymous(struct backing_pass *pass, uint64_t start, uint64_t end, const struct maps_entry *entry)
{
    uint64_t page = page_size();
    /* Chunks after the first start at multiples of their size, so that no huge-page block
     * straddles two. */
    uint64_t chunk_bytes = (uint64_t)PAGEMAP_CHUNK_PAGES * page;
    for (uint64_t chunk = start; chunk < end;) {
        uint64_t chunk_end = (chunk / chunk_bytes + 1) * chunk_bytes;
        if (chunk_end > end)
            chunk_end = end;
        uint64_t pages = (chunk_end - chunk) / page;
        size_t bytes = (size_t)pages * sizeof(uint64_t);
        ssize_t got = pread(pass->pagemap, pass->area->pagemap, bytes, (off_t)(chunk / page * sizeof(uint64_t)));
        if (got != (ssize_t)bytes) {
            fail(pass, WIRE_INTERNAL_ERROR, "cannot read /proc/self/pagemap", got < 0 ? errno : EIO, chunk);
            return false;
        }
        const uint64_t *entries = pass->area->pagemap;
        uint64_t cursor = chunk, huge = pass->huge;
        struct huge_range ranges[4];
        uint32_t count = huge == 0 ? 0 : huge_mapped_ranges(pass->pagemap, chunk, chunk_end, ranges, 4);
        for (uint32_t range = 0; range < count; range++) {
            for (uint64_t block = (ranges[range].start + huge - 1) & ~(huge - 1); block + huge <= ranges[range].end;
                 block += huge) {
                if (!copy_huge_block(pass, block))
                    continue;
                if (!copy_present_runs(pass, cursor, entries + (cursor - chunk) / page, (block - cursor) / page))
                    return false;
                cursor = block + huge;
            }
        }
        if (!copy_present_runs(pass, cursor, entries + (cursor - chunk) / page, (chunk_end - cursor) / page)
            || !map_file_over(pass, chunk, pages * page, entry))
            return false;
        uint64_t index = 0, first;
        while (next_present_run(entries, pages, &index, &first))
            populate(pass, chunk + first * page, (index - first) * page, entry->writable);
        chunk = chunk_end;
    }
    return true;
}

/* A private file mapping: pages never touched hold the file's bytes, so every page is copied. */
static bool back_file_mapping(struct backing_pass *pass, uint64_t start, uint64_t end, const struct maps_entry *entry)
{
    uint64_t chunk_bytes = (uint64_t)PAGEMAP_CHUNK_PAGES * page_size();
    for (uint64_t chunk = start; chunk < end; chunk += chunk_bytes) {
        uint64_t length = end - chunk < chunk_bytes ? end - chunk : chunk_bytes;
        if (!copy_into_file(pass, chunk, length) || !map_file_over(pass, chunk, length, entry))
            return false;
        populate(pass, chunk, length, entry->writable);
    }
    return true;
}

static bool back_piece(struct backing_pass *pass, uint64_t start, uint64_t end, const struct maps_entry *entry)
{
    if (start >= end)
        return true;
    if (pass->surveying) {
        pass->needs_copy = true;
        return false;
    }
    /* Bytes an earlier mapping at these addresses left in the file must not show through the
     * new memory's untouched pages. */
    fallocate(pass->file.descriptor, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)start, (off_t)(end - start));
    bool backed = entry->inode == 0 ? back_anonymous(pass, start, end, entry) : back_file_mapping(pass, start, end, entry);
    if (backed)
        add_extent(pass, start, end);
    return backed;
}

static bool is_our_file(const struct backing_pass *pass, const struct maps_entry *entry)
{
    return entry->shared && entry->inode == (uint64_t)pass->file.inode
           && entry->device_major == major(pass->file.device) && entry->device_minor == minor(pass->file.device);
}

/* Files this library makes (the address-space file, ordinary segments' memfds, the hole file) are
 * named so; a mapping of one is an attachment, never the process's own memory, even a private one
 * (read-only windows map privately: window_map.c). */
#define OUR_MEMFD_PREFIX "/memfd:xpmem"

static bool can_back(const struct maps_entry *entry)
{
    if (entry->shared || !entry->readable || entry->executable)
        return false;
    if (maps_entry_path_starts_with(entry, OUR_MEMFD_PREFIX))
        return false;
    if (entry->path_length > 0 && entry->path[0] == '[')
        return maps_entry_path_is(entry, "[heap]") || maps_entry_path_is(entry, "[stack]")
               || maps_entry_path_starts_with(entry, "[anon:") || maps_entry_path_starts_with(entry, "[stack:");
    if (entry->inode != 0 && maps_entry_path_starts_with(entry, "/dev/") && !maps_entry_path_starts_with(entry, "/dev/zero"))
        return false; /* device memory: not ours to copy */
    return true;
}

/* Backs [start, end) of one mapping, minus this library's private memory. */
static bool back_entry_part(struct backing_pass *pass, uint64_t start, uint64_t end, const struct maps_entry *entry)
{
    struct { uint64_t start, end; } excluded[2] = {
        {(uint64_t)(uintptr_t)pass->area->base, (uint64_t)(uintptr_t)pass->area->base + pass->area->size},
        {(uint64_t)(uintptr_t)pass->area->maps_text,
         (uint64_t)(uintptr_t)pass->area->maps_text + pass->area->maps_capacity},
    };
    if (excluded[0].start > excluded[1].start) {
        uint64_t s = excluded[0].start, e = excluded[0].end;
        excluded[0] = excluded[1];
        excluded[1].start = s;
        excluded[1].end = e;
    }
    uint64_t cursor = start;
    for (int index = 0; index < 2; index++) {
        if (excluded[index].end <= cursor || excluded[index].start >= end)
            continue;
        if (!back_piece(pass, cursor, excluded[index].start > cursor ? excluded[index].start : cursor, entry))
            return false;
        cursor = excluded[index].end;
        if (cursor >= end)
            return true;
    }
    return back_piece(pass, cursor, end, entry);
}

static bool back_entry(struct backing_pass *pass, const struct maps_entry *entry, uint64_t start, uint64_t end)
{
    if (is_our_file(pass, entry)) {
        /* Backed, unless the exporter made it inaccessible since: importers must not reach memory
         * the exporter itself cannot. Our file mapped elsewhere (an attachment of our own
         * segment) is a hole. */
        if (entry->offset == entry->start && entry->readable)
            add_extent(pass, start, end);
        return true;
    }
    if (!can_back(entry))
        return true;
    if (maps_entry_path_is(entry, "[stack]") && start < entry->start + page_size())
        start = entry->start + page_size();
    return back_entry_part(pass, start, end, entry);
}

/* Off by default: prefaulting costs about what the exporter's own later faults cost, but the
 * importer waits for it. */
static bool populate_enabled(void)
{
    const char *value = getenv("XPMEM_BACKING_POPULATE");
    return value != NULL && strcmp(value, "1") == 0;
}

/* One walk over the mappings of [start, end). */
static void back_listed_mappings(struct backing_pass *pass, uint64_t start, uint64_t end)
{
    struct backing_result *result = pass->result;
    result->count = 0;
    struct maps_walk walk;
    if (!maps_walk_start(&walk, pass->area, start)) {
        fail(pass, WIRE_INTERNAL_ERROR, "cannot read /proc/thread-self/maps", errno, 0);
        return;
    }
    struct maps_entry entry;
    uint64_t done = start; /* below this, every mapping has been seen */
    while (result->code == 0 && !pass->needs_copy && maps_walk_next(&walk, &entry)) {
        if (entry.start >= end)
            break;
        uint64_t piece_start = entry.start > done ? entry.start : done;
        uint64_t piece_end = entry.end < end ? entry.end : end;
        done = entry.end;
        back_entry(pass, &entry, piece_start, piece_end);
    }
    if (walk.error != 0 && result->code == 0)
        fail(pass, WIRE_INTERNAL_ERROR, "cannot list the mappings (/proc/thread-self/maps)", walk.error, done);
    maps_walk_finish(&walk);
}


/* Following the exporter's unmaps and moves (exporter_watch.h), with every other thread stopped. */

/* Frees the file's pages for [start, end), which the exporter unmapped, except where the file is
 * mapped at offset == address again by now: another thread may have grown a backed mapping in place
 * into the range (mremap without a move raises no event) and written there. */
static void punch_unmapped(struct backing_pass *pass, uint64_t start, uint64_t end)
{
    struct maps_walk walk;
    if (!maps_walk_start(&walk, pass->area, start))
        return; /* leaving the pages costs memory and staleness, never data */
    struct maps_entry entry;
    uint64_t next = start;
    while (next < end && maps_walk_next(&walk, &entry)) {
        if (entry.start >= end)
            break;
        if (!is_our_file(pass, &entry) || entry.offset != entry.start)
            continue;
        if (entry.start > next)
            fallocate(pass->file.descriptor, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)next,
                      (off_t)(entry.start - next));
        next = entry.end;
    }
    bool listed = walk.error == 0;
    maps_walk_finish(&walk);
    if (listed && next < end)
        fallocate(pass->file.descriptor, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)next, (off_t)(end - next));
}

/* A mapping moved from `from` (by mremap, perhaps more than once since) still maps the file at
 * `from`, wherever it is now: copy what the file holds there to offset == its address, map that over
 * it, and free the old offsets. Only the moved bytes are copied; a mapping that grew as it moved gets
 * holes (zeros) beyond them, as anonymous memory would, instead of the file's bytes past the old end,
 * which belong to whatever lies there. */
static void rehome_moved(struct backing_pass *pass, uint64_t from, uint64_t length)
{
    ssize_t maps_length = proc_maps_read(pass->area);
    if (maps_length < 0)
        return;
    const char *cursor = pass->area->maps_text, *maps_end = cursor + maps_length;
    struct maps_entry entry;
    bool found = false;
    while (proc_maps_next(&cursor, maps_end, &entry)) {
        if (is_our_file(pass, &entry) && entry.offset == from && entry.start != from) {
            found = true;
            break;
        }
    }
    /* Unmapped since: its own event follows, and the old offsets are free. */
    if (found) {
        uint64_t to = entry.start, end = entry.end;
        int descriptor = pass->file.descriptor;
        fallocate(descriptor, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)to, (off_t)(end - to));
        uint64_t moved_end = to + length < end ? to + length : end;
        for (off_t data = (off_t)from; data < (off_t)(from + (moved_end - to));) {
            data = lseek(descriptor, data, SEEK_DATA);
            if (data < 0 || (uint64_t)data >= from + (moved_end - to))
                break;
            off_t hole = lseek(descriptor, data, SEEK_HOLE);
            if (hole < 0 || (uint64_t)hole > from + (moved_end - to))
                hole = (off_t)(from + (moved_end - to));
            uint64_t address = to + ((uint64_t)data - from);
            if (!copy_into_file(pass, address, (uint64_t)(hole - data)))
                return;
            data = hole;
        }
        exporter_watch_remove(to, end - to);
        if (!map_file_over(pass, to, end - to, &entry))
            return;
    }
    punch_unmapped(pass, from, from + length);
}

/* Acts on the queued events in order. Runs before any backing in the same stop, so that a new
 * mapping backed at an address just unmapped is never punched by that address's old event. */
static void follow_changes(struct backing_pass *pass)
{
    struct watch_queue *queue = pass->area->watch;
    exporter_watch_collect(pass->area);
    for (uint32_t index = 0; index < queue->count; index++) {
        const struct watch_event *event = &queue->events[index];
        if (event->kind == WATCH_UNMAPPED)
            punch_unmapped(pass, event->from, event->from + event->length);
        else if (event->kind == WATCH_MOVED)
            rehome_moved(pass, event->from, event->length);
    }
    queue->count = 0;
}

static uint64_t monotonic_ns(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec;
}

static void back_range(uint64_t start, uint64_t length, bool fill, struct backing_result *result);

void backing_back_range(uint64_t start, uint64_t length, bool fill, struct backing_result *result)
{
    back_range(start, length, fill, result);
}

/* Gives every page of the backed extents a page in the file (zeros where none was). While the other
 * threads are stopped, so that nothing the exporter unmaps meanwhile gets pages back. */
static void fill_extents(const struct backing_pass *pass)
{
    for (uint32_t index = 0; index < pass->result->count; index++)
        fallocate(pass->file.descriptor, FALLOC_FL_KEEP_SIZE, (off_t)pass->result->extents[index].start,
                  (off_t)pass->result->extents[index].length);
}

/* Whether every page of the surveyed extents already has a page in the file (mincore of the
 * exporter's own mapping of them: a fill would change nothing). Read without stopping anyone: an
 * unmap racing it is followed as if it came after the fill. Uses the pagemap buffer as mincore's
 * vector (the survey does not read the pagemap). */
static bool extents_fully_allocated(const struct backing_pass *pass)
{
    unsigned char *vector = (unsigned char *)pass->area->pagemap;
    uint64_t chunk_bytes = (uint64_t)PAGEMAP_CHUNK_PAGES * sizeof(uint64_t) * page_size();
    for (uint32_t index = 0; index < pass->result->count; index++) {
        const struct wire_extent *extent = &pass->result->extents[index];
        for (uint64_t at = extent->start; at < extent->start + extent->length; at += chunk_bytes) {
            uint64_t length = extent->start + extent->length - at < chunk_bytes ? extent->start + extent->length - at
                                                                                 : chunk_bytes;
            if (mincore((void *)(uintptr_t)at, length, vector) != 0)
                return false;
            for (uint64_t page = 0; page < length / page_size(); page++)
                if ((vector[page] & 1) == 0)
                    return false;
        }
    }
    return true;
}

static void back_range(uint64_t start, uint64_t length, bool fill, struct backing_result *result)
{
    memset(result, 0, sizeof *result);
    struct backing_pass pass = {.result = result, .pagemap = -1, .populate = populate_enabled(),
                                .huge = shmem_huge_page_size()};
    pass.area = private_area_get();
    if (pass.area == NULL) {
        fail(&pass, WIRE_RESOURCE_EXHAUSTED, "the library's private area could not be mapped", errno, 0);
        return;
    }
    result->extents = pass.area->extents;
    pass.file = address_space_file_current();
    if (pass.file.descriptor < 0) {
        fail(&pass, WIRE_NOT_FOUND, "this process has no address-space file", 0, 0);
        return;
    }
    uint64_t end = start + length;
    if (end < start || end > ADDRESS_SPACE_LIMIT)
        end = ADDRESS_SPACE_LIMIT;
    start = page_round_down(start);
    if (start >= end)
        return;

    /* Most attaches are of ranges already backed (or holes): a survey without stopping anyone
     * answers them. Only when something must be copied are the other threads stopped. */
    uint64_t began = monotonic_ns();
    pass.surveying = true;
    back_listed_mappings(&pass, start, end);
    pass.surveying = false;
    result->survey_ns = monotonic_ns() - began;
    /* A fill must happen with the threads stopped even when nothing needs copying, unless there is
     * nothing to fill: importers ask for fills at will (any fault of theirs), and each stop
     * interrupts every thread's system calls. */
    if ((!pass.needs_copy && (!fill || extents_fully_allocated(&pass))) || result->code != 0)
        goto check_count;
    pass.needs_copy = false;

    exporter_watch_prepare();
    if (thread_stop_prepare(pass.area) < 0) {
        fail(&pass, WIRE_BUSY, "no free real-time signal to stop threads with", errno, 0);
        return;
    }
    pass.pagemap = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    if (pass.pagemap < 0) {
        fail(&pass, WIRE_INTERNAL_ERROR, "cannot open /proc/self/pagemap", errno, 0);
        return;
    }
    began = monotonic_ns();
    if (thread_stop_all(pass.area) < 0) {
        fail(&pass, WIRE_BUSY, "the exporter's threads did not stop within 5 s", errno, 0);
        close(pass.pagemap);
        return;
    }
    /* From here to the release: no allocation, no locks, no stdio (a stopped thread may hold them),
     * and no writes outside the private area. The mappings are listed again: they may have
     * changed since the survey. */
    uint64_t stopped = monotonic_ns();
    result->stop_ns = stopped - began;
    thread_stop_last_counts(&result->threads_parked, &result->threads_left_running);
    follow_changes(&pass);
    back_listed_mappings(&pass, start, end);
    if (fill && result->code == 0)
        fill_extents(&pass);
    thread_stop_release(pass.area);
    result->stopped_ns = monotonic_ns() - stopped;
    close(pass.pagemap);
check_count:
    if (result->code == 0 && result->count > WIRE_MAX_BACKED_EXTENTS)
        fail(&pass, WIRE_RESOURCE_EXHAUSTED, "the range has more than 240 separate backed pieces", 0, start);
    if (result->code != 0)
        result->count = 0;
}

static void follow_all_changes(struct backing_result *result);

void backing_follow_changes(struct backing_result *result)
{
    backing_lock();
    follow_all_changes(result);
    backing_unlock();
    hook_notices_send();
}

static void follow_all_changes(struct backing_result *result)
{
    memset(result, 0, sizeof *result);
    struct backing_pass pass = {.result = result, .pagemap = -1};
    pass.area = private_area_get();
    pass.file = address_space_file_current();
    if (pass.area == NULL || pass.file.descriptor < 0 || thread_stop_prepare(pass.area) < 0)
        return;
    result->extents = pass.area->extents;
    if (thread_stop_all(pass.area) < 0) {
        fail(&pass, WIRE_BUSY, "the exporter's threads did not stop within 5 s", errno, 0);
        return;
    }
    follow_changes(&pass);
    thread_stop_release(pass.area);
}


/* Every backed mapping becomes private anonymous memory with the same bytes and protection, and the
 * file is emptied: descriptors importers still hold alias nothing live any more. Threads stopped, so
 * no write made meanwhile is lost; runs on a private stack (the caller's may be backed). */
static void unback_all(struct backing_pass *pass)
{
    ssize_t maps_length = proc_maps_read(pass->area);
    if (maps_length < 0) {
        fail(pass, WIRE_INTERNAL_ERROR, "cannot read /proc/thread-self/maps", errno, 0);
        return;
    }
    const char *cursor = pass->area->maps_text, *end = cursor + maps_length;
    struct maps_entry entry;
    while (proc_maps_next(&cursor, end, &entry)) {
        if (!is_our_file(pass, &entry) || entry.offset != entry.start)
            continue;
        uint64_t length = entry.end - entry.start;
        uint8_t *copy = raw_mmap(NULL, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (copy == MAP_FAILED) {
            fail(pass, WIRE_RESOURCE_EXHAUSTED, "no memory for a private copy", errno, entry.start);
            continue;
        }
        if (!entry.readable)
            mprotect((void *)(uintptr_t)entry.start, length, PROT_READ);
        int descriptor = pass->file.descriptor;
        for (off_t data = (off_t)entry.start; (uint64_t)data < entry.end;) {
            data = lseek(descriptor, data, SEEK_DATA);
            if (data < 0 || (uint64_t)data >= entry.end)
                break;
            off_t hole = lseek(descriptor, data, SEEK_HOLE);
            if (hole < 0 || (uint64_t)hole > entry.end)
                hole = (off_t)entry.end;
            memcpy(copy + ((uint64_t)data - entry.start), (const void *)(uintptr_t)data, (size_t)(hole - data));
            data = hole;
        }
        mprotect(copy, length, (entry.readable ? PROT_READ : 0) | (entry.writable ? PROT_WRITE : 0));
        /* Replacing a watched mapping would wait for its own unmap event: stop watching it first. */
        exporter_watch_remove(entry.start, length);
        if (raw_mremap(copy, length, length, MREMAP_MAYMOVE | MREMAP_FIXED, (void *)(uintptr_t)entry.start) == MAP_FAILED) {
            fail(pass, WIRE_INTERNAL_ERROR, "cannot put a private copy in place", errno, entry.start);
            raw_munmap(copy, length);
        } else {
            hook_notices_record(entry.start, length);
        }
    }
    /* A mapping left shared (no memory for its copy) still needs its pages in the file. */
    if (pass->result->code == 0)
        fallocate(pass->file.descriptor, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, (off_t)ADDRESS_SPACE_LIMIT);
}

void backing_unback_all(struct backing_result *result)
{
    backing_lock();
    memset(result, 0, sizeof *result);
    struct backing_pass pass = {.result = result, .pagemap = -1};
    pass.area = private_area_get();
    pass.file = address_space_file_current();
    if (pass.area != NULL && pass.file.descriptor >= 0) {
        result->extents = pass.area->extents;
        if (thread_stop_prepare(pass.area) < 0 || thread_stop_all(pass.area) < 0) {
            fail(&pass, WIRE_BUSY, "the exporter's threads did not stop within 5 s", errno, 0);
        } else {
            follow_changes(&pass);
            unback_all(&pass);
            thread_stop_release(pass.area);
        }
    }
    backing_unlock();
    hook_notices_send();
}
