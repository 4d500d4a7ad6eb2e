/* Telling the memory hooks of an MPI stack that pages of the process changed under them.
 *
 * Backing a range replaces its private pages with pages of the address-space file (the bytes stay,
 * the pages do not), and making it private again replaces them back. A registration cache that
 * pinned the old pages for a network card (UCX's, for InfiniBand between hosts) must drop its
 * registrations of those ranges, or it would go on sending the old pages. Such caches hear of
 * changes through the hooks the library bypasses (raw_memory.h); UCX also takes them from whoever
 * changes memory behind its hooks, through ucm_vm_munmap, which is what this calls where UCX is
 * loaded.
 *
 * Ranges are recorded while the other threads are stopped (a fixed list: no allocation, no lock
 * beyond the caller's backing lock) and told after they run again, outside the backing lock: the
 * hooks' callbacks take their own locks, which a stopped thread may hold. */
#ifndef XPMEM_HOOK_NOTICES_H
#define XPMEM_HOOK_NOTICES_H

#include <stdint.h>

/* Under the backing lock. Adjacent ranges merge; past the list's room, the whole address space is
 * told. */
void hook_notices_record(uint64_t start, uint64_t length);

/* Takes the recorded ranges (under the backing lock); then tells them (outside it). */
struct hook_notices_batch {
    uint32_t count;
    struct {
        uint64_t start, length;
    } ranges[32];
};
void hook_notices_take(struct hook_notices_batch *batch);
void hook_notices_tell(const struct hook_notices_batch *batch);

#endif
