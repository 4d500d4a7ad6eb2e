#include "import_cache.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct imported_segment {
    uint64_t segment;
    int descriptors[2]; /* [0] read-only, [1] read-write; -1 when none */
    bool base_known;
    uint64_t base;
    struct wire_extent *backed; /* sorted, disjoint, merged */
    uint32_t backed_count;
    uint32_t backed_capacity;
};

static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;
static struct imported_segment *segments;
static size_t segment_count, segment_capacity;

void import_cache_lock(void) { pthread_mutex_lock(&cache_lock); }
void import_cache_unlock(void) { pthread_mutex_unlock(&cache_lock); }

bool import_cache_enabled(void)
{
    const char *value = getenv("XPMEM_ATTACH_CACHE");
    return value == NULL || strcmp(value, "0") != 0;
}

static struct imported_segment *find(uint64_t segment)
{
    for (size_t index = 0; index < segment_count; index++)
        if (segments[index].segment == segment)
            return &segments[index];
    return NULL;
}

static struct imported_segment *find_or_add(uint64_t segment)
{
    struct imported_segment *found = find(segment);
    if (found != NULL)
        return found;
    if (segment_count == segment_capacity) {
        size_t capacity = segment_capacity == 0 ? 16 : segment_capacity * 2;
        struct imported_segment *grown = realloc(segments, capacity * sizeof *grown);
        if (grown == NULL)
            return NULL;
        segments = grown;
        segment_capacity = capacity;
    }
    struct imported_segment *added = &segments[segment_count++];
    memset(added, 0, sizeof *added);
    added->segment = segment;
    added->descriptors[0] = added->descriptors[1] = -1;
    return added;
}

int import_cache_adopt_descriptor(uint64_t segment, bool read_write, int received)
{
    struct imported_segment *entry = find_or_add(segment);
    if (entry == NULL)
        return received; /* no memory to remember it: use it once, the caller keeps it mapped */
    int *kept = &entry->descriptors[read_write ? 1 : 0];
    if (*kept < 0) {
        *kept = received;
    } else if (received >= 0 && received != *kept) {
        close(received);
    }
    return *kept;
}

int import_cache_replace_descriptor(uint64_t segment, bool read_write, int received)
{
    struct imported_segment *entry = find_or_add(segment);
    if (entry == NULL)
        return -1;
    int *kept = &entry->descriptors[read_write ? 1 : 0];
    if (*kept >= 0 && *kept != received)
        close(*kept);
    *kept = received;
    return received;
}

static int by_start(const void *left, const void *right)
{
    const struct wire_extent *a = left, *b = right;
    return a->start < b->start ? -1 : a->start > b->start;
}

/* Adds one extent and merges every overlapping or touching pair (the lists stay short). */
static void insert_extent(struct imported_segment *entry, struct wire_extent extent)
{
    if (extent.length == 0)
        return;
    if (entry->backed_count == entry->backed_capacity) {
        uint32_t capacity = entry->backed_capacity == 0 ? 8 : entry->backed_capacity * 2;
        struct wire_extent *grown = realloc(entry->backed, capacity * sizeof *grown);
        if (grown == NULL)
            return; /* knowing less only costs a round trip */
        entry->backed = grown;
        entry->backed_capacity = capacity;
    }
    struct wire_extent *list = entry->backed;
    list[entry->backed_count++] = extent;
    qsort(list, entry->backed_count, sizeof *list, by_start);
    uint32_t merged = 0;
    for (uint32_t index = 1; index < entry->backed_count; index++) {
        uint64_t merged_end = list[merged].start + list[merged].length;
        if (list[index].start <= merged_end) {
            uint64_t end = list[index].start + list[index].length;
            if (end > merged_end)
                list[merged].length = end - list[merged].start;
        } else {
            list[++merged] = list[index];
        }
    }
    entry->backed_count = merged + 1;
}

void import_cache_note_backed(uint64_t segment, uint64_t base, const struct wire_extent *extents, uint32_t count)
{
    struct imported_segment *entry = find_or_add(segment);
    if (entry == NULL)
        return;
    entry->base_known = true;
    entry->base = base;
    for (uint32_t index = 0; index < count; index++)
        insert_extent(entry, extents[index]);
}

int import_cache_find_backed(uint64_t segment, bool read_write, uint64_t offset, uint64_t length, uint64_t *file_offset)
{
    struct imported_segment *entry = find(segment);
    if (entry == NULL || !entry->base_known || entry->descriptors[read_write ? 1 : 0] < 0)
        return -1;
    uint64_t start = entry->base + offset, end = start + length;
    if (end < start)
        return -1;
    for (uint32_t index = 0; index < entry->backed_count; index++) {
        const struct wire_extent *extent = &entry->backed[index];
        if (extent->start <= start && end <= extent->start + extent->length) {
            *file_offset = start;
            return entry->descriptors[read_write ? 1 : 0];
        }
    }
    return -1;
}

void import_cache_forget_extents(uint64_t segment)
{
    pthread_mutex_lock(&cache_lock);
    struct imported_segment *entry = find(segment);
    if (entry != NULL)
        entry->backed_count = 0;
    pthread_mutex_unlock(&cache_lock);
}

static void drop(struct imported_segment *entry)
{
    for (int index = 0; index < 2; index++)
        if (entry->descriptors[index] >= 0)
            close(entry->descriptors[index]);
    free(entry->backed);
}

void import_cache_forget_segment(uint64_t segment)
{
    pthread_mutex_lock(&cache_lock);
    struct imported_segment *entry = find(segment);
    if (entry != NULL) {
        drop(entry);
        *entry = segments[--segment_count];
    }
    pthread_mutex_unlock(&cache_lock);
}

void import_cache_forget_all(void)
{
    pthread_mutex_lock(&cache_lock);
    for (size_t index = 0; index < segment_count; index++)
        drop(&segments[index]);
    segment_count = 0;
    pthread_mutex_unlock(&cache_lock);
}

void import_cache_reset_after_fork(void)
{
    /* Another thread of the parent may have held the lock at fork: it does not exist here. */
    pthread_mutex_init(&cache_lock, NULL);
    import_cache_forget_all();
}
