#include "segment_moves.h"

#include <sys/mman.h>
#include <unistd.h>

#include "attachments.h"
#include "debug_log.h"
#include "grants.h"
#include "hook_notices.h"
#include "import_cache.h"
#include "raw_memory.h"

struct move {
    uint64_t segment;
    bool read_write;
    int file;
    unsigned remapped, failed;
};

static void remap(const struct attachment *attachment, void *context)
{
    struct move *move = context;
    struct grant grant;
    if (!grants_find(attachment->apid, &grant) || grant.segment != move->segment || grant.read_write != move->read_write)
        return;
    int protection = PROT_READ | (move->read_write ? PROT_WRITE : 0);
    /* MAP_FIXED replaces the old file's pages at once, for every thread; the window's bytes are the
     * same in both files at this moment (the exporter copied them inside its invalidation window). */
    /* Either way the window's pages change (under the backing lock: the event thread serves this). */
    hook_notices_record(attachment->address, attachment->length);
    if (raw_mmap((void *)attachment->address, attachment->length, protection, MAP_SHARED | MAP_FIXED, move->file,
                 (off_t)attachment->file_offset) == MAP_FAILED) {
        /* Showing the old file's stale bytes would be worse than faulting. */
        raw_mmap((void *)attachment->address, attachment->length, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
                 -1, 0);
        move->failed++;
        return;
    }
    move->remapped++;
}

void segment_moves_follow(uint64_t segment, bool read_write, int file)
{
    import_cache_lock();
    int kept = import_cache_replace_descriptor(segment, read_write, file);
    struct move move = {.segment = segment, .read_write = read_write, .file = file};
    attachments_for_each(remap, &move);
    /* Held windows follow the new file; cached idle ones are dropped rather than trusted (a failed
     * remap left one inaccessible). */
    attachments_mark_stale(segment, 0, UINT64_MAX);
    import_cache_unlock();
    if (kept < 0)
        close(file); /* not kept (no memory): the mappings hold the file */
    debug_log("segment %llu moved to a fresh file: %u window(s) follow it, %u made inaccessible",
              (unsigned long long)segment, move.remapped, move.failed);
}
