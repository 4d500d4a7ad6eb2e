/* Backing: making the exporter's memory in a range be the address-space file's pages, so that
 * importers mapping the file see it live.
 *
 * For each mapping overlapping the range: already the file at offset == address -> backed;
 * readable private memory (anonymous, heap, stacks, .data/.bss, read-only data, private file
 * mappings) -> with every other thread stopped, its present pages are written into the file at
 * the same offsets (pages never touched stay holes and read as zero) and the file is mapped over
 * the same addresses with the same protection -> backed. Left as holes: PROT_NONE, code
 * (executable mappings: nobody transfers code, and remapping text other threads run is not worth
 * the risk), shared mappings of other files (remapping would cut their sharing), device
 * mappings, the kernel's [vdso]/[vvar]/[vsyscall], the lowest page of [stack] (so the main stack
 * can still grow down), and this library's private area. */
#ifndef XPMEM_BACKING_H
#define XPMEM_BACKING_H

#include <stdbool.h>
#include <stdint.h>

#include "wire.h"

struct backing_result {
    struct wire_extent *extents; /* merged, sorted; in the private area */
    uint32_t count;
    uint16_t code;  /* 0, or a wire_error_code */
    char text[160]; /* why, when code != 0 */
    uint64_t copied_bytes;
    uint64_t remapped_bytes;
    /* Where the time went, for XPMEM_DEBUG=1: listing the mappings without stopping anyone,
     * stopping the other threads, and copying and remapping while they were stopped. */
    uint64_t survey_ns, stop_ns, stopped_ns;
    /* The stop's threads: parked, and left running because they block the stop signal (they must
     * not write the range meanwhile: XPMEM_DEBUG=1 shows the count). */
    unsigned threads_parked, threads_left_running;
};

/* Backs [start, start + length) (absolute addresses == file offsets); with `fill`, also gives every
 * page of the backed extents a page in the file (zeros where none was), so that an importer's fault
 * on a page the exporter never touched finds one. Runs on the event thread, which holds the backing
 * lock (backing_lock) while it serves any event. */
void backing_back_range(uint64_t start, uint64_t length, bool fill, struct backing_result *result);

/* Backing, following and serving the broker's events run one at a time: while one library thread
 * has the others stopped, the other library thread (exempt from stops) must not write memory a copy
 * is being taken of. */
void backing_lock(void);
void backing_unlock(void);
/* In a fork child: the lock as if never taken. */
void backing_lock_reset(void);

/* Acts on the exporter's unmaps and moves of backed memory (exporter_watch.h): stops the other
 * threads, reads the pending events, frees unmapped file ranges and re-homes moved mappings. */
void backing_follow_changes(struct backing_result *result);

/* Makes every backed mapping private memory again, with its bytes, and empties the file (the last
 * address-space segment was removed). Stops the other threads; run it on a private stack
 * (exporter_watch_unback_all does). */
void backing_unback_all(struct backing_result *result);


#endif
