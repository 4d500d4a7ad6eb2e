/* The library's own mmap, munmap, mremap and madvise, made as system calls rather than through the
 * libc symbols, which other libraries in the process may replace.
 *
 * MPI stacks do replace them: UCX's memory hooks (libucm, loaded with UCX by Open MPI's and MPICH's
 * UCX layers) patch every loaded library's references to these functions, so as to hear of
 * unmapped memory. Two things go wrong if our calls pass through such a hook:
 * - UCM's mremap takes four arguments and forwards four: the new address MREMAP_FIXED needs is
 *   dropped, and the kernel reads whatever the register holds. Making backed memory private again
 *   (xpmem_remove) then "succeeded" with the copy put somewhere else, and the process's own stack,
 *   left mapped from a file about to be emptied, read zeros: MPICH's xpmem module crashed in
 *   MPI_Finalize.
 * - Much of our work runs while every other thread of the process is stopped. A hook takes locks and
 *   runs its callers' callbacks, and a stopped thread may hold one of those: a deadlock.
 * Where our calls replace pages, UCX is told separately, and safely (hook_notices.h). */
#ifndef XPMEM_RAW_MEMORY_H
#define XPMEM_RAW_MEMORY_H

#include <stddef.h>
#include <sys/types.h>

/* As the libc functions: MAP_FAILED or -1 with errno set on failure. */
void *raw_mmap(void *address, size_t length, int protection, int flags, int descriptor, off_t offset);
int raw_munmap(void *address, size_t length);
/* Always with a new address (MREMAP_MAYMOVE | MREMAP_FIXED moves), which the libc function takes
 * variadically. */
void *raw_mremap(void *address, size_t old_length, size_t new_length, int flags, void *new_address);
int raw_madvise(void *address, size_t length, int advice);

#endif
