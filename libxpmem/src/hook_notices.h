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
 * Ranges are recorded under the backing lock, also while the other threads are stopped (a fixed
 * list: no allocation, no lock of anyone else's). They are told on a thread of their own that stops
 * like the application's threads: UCX's callbacks take UCX's locks and write UCX's memory, which
 * neither the event thread nor the watch thread may do (stops leave them running, and a backing
 * they run would copy memory that UCX was writing meanwhile, losing the write). */
#ifndef XPMEM_HOOK_NOTICES_H
#define XPMEM_HOOK_NOTICES_H

#include <stdint.h>

/* Under the backing lock. Adjacent ranges merge; past the list's room, the span covering them all
 * is told. */
void hook_notices_record(uint64_t start, uint64_t length);

/* After the backing lock is released: has what was recorded told (starting the notices thread the
 * first time). */
void hook_notices_send(void);

/* In a fork child: the parent's thread and ranges are not the child's. */
void hook_notices_reset_after_fork(void);

#endif
