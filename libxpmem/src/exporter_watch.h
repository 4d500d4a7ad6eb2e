/* Following the exporter's own changes to memory it has backed, as XPMEM's mmu notifier does.
 *
 * Backed memory is the address-space file mapped at offset == address; importers map the same file
 * pages. When the exporter unmaps such memory (munmap, brk shrinking, an mmap over it) the file's
 * pages must go too, or importers would keep reading memory the exporter no longer has, and later
 * read it instead of whatever the exporter maps there next; when it moves such memory (mremap, as
 * realloc does for large blocks) the moved mapping still maps the old offsets, which must be put
 * back at offset == its new address. The kernel reports both through userfaultfd events
 * (UFFD_EVENT_UNMAP, UFFD_EVENT_REMAP) for ranges registered with it; registration is in
 * write-protect mode, which costs nothing while nothing is write-protected. The thread that unmapped
 * or moved waits in the kernel until the event is read; the library reads events only while every
 * other thread is stopped (see thread_stop), so that thread stops on its way back and nothing runs
 * on the moved memory before it is re-homed. A thread of the library's own (xpmem-watch, on a
 * private stack) serves the events for the life of the process, whether or not a broker is there.
 *
 * MADV_DONTNEED on backed memory is not followed: the bytes stay (it is shared file memory), which is
 * what importers see too. */
#ifndef XPMEM_EXPORTER_WATCH_H
#define XPMEM_EXPORTER_WATCH_H

#include <stdbool.h>
#include <stdint.h>

#include "private_area.h"

/* Opens the watch once; call before stopping threads. False (and a debug line) when the kernel
 * cannot watch: backing still works, importers then do not follow unmaps. */
bool exporter_watch_prepare(void);
/* Start or stop watching a backed range (stop before mapping over a watched range ourselves: an
 * mmap over a watched range would wait for its own unmap event to be read). */
void exporter_watch_add(uint64_t start, uint64_t length);
void exporter_watch_remove(uint64_t start, uint64_t length);
/* Makes every backed mapping private memory again and empties the address-space file
 * (backing_unback_all), on the watch thread, or on its stack when there is none; returns when done,
 * with whether every mapping was made private (false: some stay shared, and the file is kept). */
bool exporter_watch_unback_all(void);
/* In a fork child: the parent's watch is not ours (the child's mappings are not registered with it). */
void exporter_watch_forget(void);
/* Reads every pending event into the area's queue without blocking. Only while other threads are
 * being stopped: reading lets the unmapping thread return. */
void exporter_watch_collect(struct private_area *area);

#endif
