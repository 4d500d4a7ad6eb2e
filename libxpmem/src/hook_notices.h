/* Telling the memory hooks of an MPI stack that pages of the process changed under them.
 *
 * Backing a range replaces its private pages with pages of the address-space file (the bytes stay,
 * the pages do not), and making it private again replaces them back. A registration cache that
 * pinned the old pages for a network card (UCX's, for InfiniBand between hosts) must drop its
 * registrations of those ranges, or it would go on sending the old pages. Such caches hear of
 * changes through the hooks the library bypasses (raw_memory.h); UCX also takes them from whoever
 * changes memory behind its hooks, through ucm_vm_munmap, which this calls where UCX is loaded; and
 * Open MPI through opal_mem_hooks_release_hook (for its own caches, grdma's, under pml ob1), which
 * this calls only with XPMEM_TELL_OPEN_MPI=1 (hook_notices.c says why).
 *
 * Ranges are recorded under the backing lock, also while the other threads are stopped (a fixed
 * list: no allocation, no lock of anyone else's). They are told on a thread that stops like the
 * application's: the stacks' callbacks take their locks and write their memory, which neither the event
 * thread nor the watch thread may do (stops leave them running, and a backing they run would copy
 * memory that UCX was writing meanwhile, losing the write). That is the notices thread, which an
 * exporting process starts at xpmem_make, or the application's own thread in xpmem_hint_free. Between
 * a page's replacement and the telling, a stack may still use a registration of the old page: as long as
 * the notices thread waits for a CPU.
 *
 * Not told: a fork child's private copies (fork_snapshot.c; the parent's registrations are not the
 * child's), and an importer's own mappings of its attachments, whose attach, detach and fault
 * handling are the library's business as they are the kernel module's. */
#ifndef XPMEM_HOOK_NOTICES_H
#define XPMEM_HOOK_NOTICES_H

#include <stdint.h>

/* Under the backing lock. Adjacent ranges merge; past the list's room, the span covering them all
 * is told. */
void hook_notices_record(uint64_t start, uint64_t length);

/* On an application thread (one that stops), before anything is recorded: starts the notices thread
 * if this process has none. Never on the event or watch thread: creating a thread allocates and
 * takes glibc's locks, which an application thread may hold while it waits for the watch thread
 * to read its unmap. */
void hook_notices_start(void);

/* After the backing lock is released, on any thread: wakes the notices thread to tell what was
 * recorded. Without one (none started in this process), the ranges wait for the next telling. */
void hook_notices_send(void);

/* On an application thread, after the backing lock is released: tells what was recorded before
 * returning, in this thread. */
void hook_notices_tell_now(void);

/* In a fork child: the parent's thread and ranges are not the child's. */
void hook_notices_reset_after_fork(void);

#endif
